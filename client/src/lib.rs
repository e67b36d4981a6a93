//! The node daemon library.
pub mod cache;
pub mod config;
pub mod daemon;
pub mod job;
pub mod net;
pub mod netrelay;
pub mod pty;
pub mod records;
pub mod sandbox;
