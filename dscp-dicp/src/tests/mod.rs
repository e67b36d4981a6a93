//! Crate-level tests that drive several endpoints: the simulated network.

mod sim;
