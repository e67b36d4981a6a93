//! diatom-central: the central daemon.

fn main() {}
