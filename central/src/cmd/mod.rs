//! One module per `diatom` subcommand.

pub mod trace;
