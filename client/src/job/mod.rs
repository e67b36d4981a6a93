//! Running one job on the node: its exec line, its tracer handler, and the
//! runner that glues the tracer to the job's home.

pub mod fs;
pub mod handler;
pub mod launch;
pub mod members;
pub mod net;
pub mod runner;
