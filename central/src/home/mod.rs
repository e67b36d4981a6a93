//! The job's home: the `diatom exec` process on central that places the
//! job, then serves its requests (files, sockets, stdio) with the caller's
//! own permissions, cwd and umask, until it exits.

pub mod closure;
pub mod fs;
pub mod lookups;
pub mod net;
pub mod session;
pub mod signals;
pub mod terminal;
