//! The node daemon library.
