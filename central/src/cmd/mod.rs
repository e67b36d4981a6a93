//! One module per `diatom` subcommand, and the exit conventions they share.

use std::process::ExitCode;

pub mod admin;
pub mod exec;
pub mod keygen;
pub mod trace;

/// Exit status when Diatom itself failed (interface.md).
pub const EXIT_FAILURE: u8 = 255;

/// Prints the one-line `diatom: ...` error and returns status 255.
pub fn fail(err: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("diatom: {err}");
    ExitCode::from(EXIT_FAILURE)
}

/// An error and its chain of causes on one line.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let t = e.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = e.source();
    }
    s
}
