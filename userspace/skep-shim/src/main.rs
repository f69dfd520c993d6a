//! `skep-shim`: one per container, started by the node agent's runtime
//! (`skep_runtime::runtime::Runtime::create`). It forks; the parent prints
//! `ok <pid>` once `runc create` has finished and exits, the daemonised
//! child copies the container's output into its CRI log and records its
//! exit. See `skep_runtime::shim`.
//!
//! A binary of its own, depending on skep-runtime's shim half alone, so
//! each container costs one small process rather than a copy of the whole
//! `skep` binary (store, datapath, API server). It runs no async runtime
//! and installs no logging: it forks first, and reports failures on its
//! pipe and in the exit record.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = Vec::new();
    for arg in std::env::args_os().skip(1) {
        match arg.into_string() {
            Ok(arg) => args.push(arg),
            Err(arg) => {
                eprintln!("skep-shim: argument is not UTF-8: {}", arg.display());
                return ExitCode::from(2);
            }
        }
    }
    // Still single-threaded here, as `run` needs (it forks).
    let code = skep_runtime::shim::run(&args);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
