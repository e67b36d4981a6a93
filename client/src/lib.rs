//! The node daemon library.
pub mod config;
pub mod pty;
pub mod cache;
