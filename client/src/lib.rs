//! The node daemon library.
pub mod cache;
pub mod config;
pub mod job;
pub mod pty;
pub mod rpc;
pub mod wire;
