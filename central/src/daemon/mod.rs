//! The central daemon: node registry, scheduling, job table and the control
//! socket.

pub mod registry;
