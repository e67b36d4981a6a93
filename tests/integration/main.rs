//! One integration-test binary with a module per topic; shared helpers live
//! in the `diatom_tests` library (`tests/src`).

mod cluster_admin;
mod cluster_net;
mod dashboard;
mod exec;
mod faults;
mod files;
mod fsattrs;
mod locks;
mod network;
mod processes;
mod proto;
mod sandbox;
mod trace;
mod vm;
