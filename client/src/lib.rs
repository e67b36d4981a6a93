//! The node daemon library.
pub mod config;
