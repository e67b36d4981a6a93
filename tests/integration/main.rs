//! One integration-test binary with a module per topic; shared helpers live
//! in the `diatom_tests` library (`tests/src`).

mod proto;
mod trace;
mod cluster_net;
