//! diatom-client: the node daemon.

fn main() {}
