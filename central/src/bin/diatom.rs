//! diatom: the CLI.

fn main() {}
