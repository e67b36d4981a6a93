//! The central daemon: node registry, scheduling, job table and the control
//! socket. [`core::Central`] holds the logic; the UDP endpoint and the
//! control socket are thin drivers around it.

pub mod control_server;
pub mod core;
pub mod registry;
pub mod udp;
