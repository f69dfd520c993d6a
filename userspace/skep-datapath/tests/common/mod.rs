//! The case runner the root-only `harness = false` tests share: runs the
//! cases whose name contains a command-line filter (all without one), prints
//! libtest-like lines, and says whether all passed (the caller exits
//! non-zero after its own cleanup).

use std::{env, panic, time::Instant};

/// Runs each `(name, case)` through `run`, catching panics; `false` when a
/// case failed (after printing which).
pub fn run_cases<C>(cases: &[(&str, C)], run: impl Fn(&C)) -> bool {
    let filter: Vec<String> = env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mut failed = Vec::new();
    for (name, case) in cases {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let start = Instant::now();
        let result = panic::catch_unwind(panic::AssertUnwindSafe(|| run(case)));
        let status = if result.is_ok() { "ok" } else { "FAILED" };
        println!(
            "test {name} ... {status} ({:.1}s)",
            start.elapsed().as_secs_f64()
        );
        if result.is_err() {
            failed.push(*name);
        }
    }
    if failed.is_empty() {
        println!("test result: ok");
        true
    } else {
        println!("test result: FAILED: {failed:?}");
        false
    }
}
