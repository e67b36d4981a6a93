//! Central's side of Diatom: the `diatom-central` daemon, the `diatom` CLI,
//! and the job's home (the `diatom exec` process that serves a job's
//! requests with the caller's own permissions).

pub mod alloc;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod control;
pub mod daemon;
pub mod embedded;
pub mod home;
pub mod http;
pub mod store;
