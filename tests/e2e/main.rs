//! skep's end-to-end tests: one binary, run serially by `cargo xtask test`
//! (as root), each test making and removing its own namespaces and pins.

mod agent;
mod agent_input;
mod cli;
mod control_plane;
mod datapath;
