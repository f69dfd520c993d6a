//! The privileged test step in concurrent lanes.
//!
//! Each privileged test binary makes its own uniquely named namespaces,
//! links, cgroups, pins and data directories, so binaries (and the lab tests
//! apart from the rest of the e2e binary) can run at the same time. Within a
//! lane they run one after the other, each with `--test-threads=1` (tests of
//! one binary may share a fixture). A lane's output is printed whole when
//! each of its binaries ends, so lines never interleave; the summary gives
//! every run's time so growth shows.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// One run of one test binary: which binary, with which libtest filters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// The test target's name (`e2e`, `node`, …).
    pub target: &'static str,
    /// Label in the output and summary.
    pub label: &'static str,
    /// libtest arguments: name filters and `--skip`s.
    pub filters: Vec<String>,
}

impl Run {
    fn new(target: &'static str, label: &'static str, filters: &[&str]) -> Self {
        Self {
            target,
            label,
            filters: filters.iter().map(|f| (*f).to_owned()).collect(),
        }
    }
}

/// Test names of the e2e binary that bring up a multi-node lab (modules
/// `lab`, `lab_*` and the network policy suite `netpol`): libtest filters
/// match substrings of `module::test`.
const LAB_FILTERS: &[&str] = &["lab::", "lab_", "netpol::"];

/// The lanes of a full run, or one serial lane when the user gave a name
/// filter (libtest ORs filters, so a lane's own filters cannot be combined
/// with the user's).
pub fn plan(targets: &[&'static str], user_filter: Option<&str>) -> Vec<Vec<Run>> {
    if let Some(filter) = user_filter {
        return vec![targets.iter().map(|t| Run::new(t, t, &[filter])).collect()];
    }
    let skips: Vec<String> = LAB_FILTERS
        .iter()
        .flat_map(|f| ["--skip".to_owned(), (*f).to_owned()])
        .collect();
    let skips: Vec<&str> = skips.iter().map(String::as_str).collect();
    let crates: Vec<Run> = targets
        .iter()
        .filter(|t| **t != "e2e")
        .map(|t| Run::new(t, t, &[]))
        .collect();
    let mut lanes = vec![
        vec![Run::new("e2e", "e2e labs", LAB_FILTERS)],
        vec![Run::new("e2e", "e2e", &skips)],
    ];
    if !crates.is_empty() {
        lanes.push(crates);
    }
    lanes
}

/// Where each test target's executable is and which directory cargo would
/// run it in (its package's), from `cargo test --no-run`'s JSON messages.
pub fn executables(messages: &str) -> BTreeMap<String, (PathBuf, PathBuf)> {
    messages
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["profile"]["test"] == true)
        .filter_map(|m| {
            let name = m["target"]["name"].as_str()?.to_owned();
            let exe = PathBuf::from(m["executable"].as_str()?);
            let dir = Path::new(m["manifest_path"].as_str()?).parent()?.to_owned();
            Some((name, (exe, dir)))
        })
        .collect()
}

/// Runs the lanes concurrently; fails after all ended if any run failed.
pub fn run(
    lanes: Vec<Vec<Run>>,
    executables: &BTreeMap<String, (PathBuf, PathBuf)>,
) -> anyhow::Result<Vec<(String, Duration, bool)>> {
    for run in lanes.iter().flatten() {
        if !executables.contains_key(run.target) {
            bail!("cargo built no test binary named {}", run.target);
        }
    }
    let results = std::thread::scope(|scope| {
        let handles: Vec<_> = lanes
            .into_iter()
            .map(|lane| {
                scope.spawn(move || {
                    lane.into_iter()
                        .map(|run| run_one(&run, executables))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect::<Vec<_>>()
    });
    if let Some((label, _, _)) = results.iter().find(|(_, _, ok)| !ok) {
        bail!("privileged tests failed (first: {label}); their output is above");
    }
    Ok(results)
}

/// Runs one binary with its output in a file, then prints the file whole.
fn run_one(
    run: &Run,
    executables: &BTreeMap<String, (PathBuf, PathBuf)>,
) -> (String, Duration, bool) {
    let label = run.label.to_owned();
    let Some((exe, dir)) = executables.get(run.target) else {
        return (label, Duration::ZERO, false);
    };
    let started = Instant::now();
    let outcome = (|| -> anyhow::Result<bool> {
        let mut log = tempfile()?;
        let status = Command::new(exe)
            .arg("--test-threads=1")
            .args(&run.filters)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log.try_clone()?)
            .status()
            .with_context(|| format!("failed to start {}", exe.display()))?;
        let mut text = String::new();
        std::io::Seek::rewind(&mut log)?;
        std::io::Read::read_to_string(&mut log, &mut text)?;
        eprintln!(
            "xtask test: ==== {label}: {} in {:.1}s ====\n{text}",
            if status.success() { "passed" } else { "FAILED" },
            started.elapsed().as_secs_f64()
        );
        Ok(status.success())
    })();
    let ok = outcome.unwrap_or_else(|err| {
        eprintln!("xtask test: {label}: {err:#}");
        false
    });
    (label, started.elapsed(), ok)
}

/// An unnamed file for a run's output (removed when closed).
fn tempfile() -> anyhow::Result<std::fs::File> {
    let dir = std::env::temp_dir();
    let path = dir.join(format!(
        "xtask-test-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .with_context(|| format!("failed to create {}", path.display()))?;
    std::fs::remove_file(&path).with_context(|| format!("failed to remove {}", path.display()))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGETS: &[&str] = &["e2e", "image", "node"];

    #[test]
    fn labs_the_rest_of_e2e_and_the_crates_run_side_by_side() {
        let lanes = plan(TARGETS, None);
        assert_eq!(lanes.len(), 3);
        assert_eq!(lanes[0][0].filters, ["lab::", "lab_", "netpol::"]);
        assert_eq!(
            lanes[1][0].filters,
            ["--skip", "lab::", "--skip", "lab_", "--skip", "netpol::"]
        );
        let crates: Vec<_> = lanes[2].iter().map(|r| r.target).collect();
        assert_eq!(crates, ["image", "node"]);
    }

    #[test]
    fn a_user_filter_runs_everything_in_one_lane() {
        let lanes = plan(TARGETS, Some("agent"));
        assert_eq!(lanes.len(), 1);
        assert!(lanes[0].iter().all(|r| r.filters == ["agent"]));
        assert_eq!(lanes[0].len(), 3);
    }

    #[test]
    fn executables_come_from_test_artifacts_only() {
        let messages = r#"{"reason":"compiler-artifact","profile":{"test":true},"target":{"name":"node"},"executable":"/t/node-1","manifest_path":"/w/userspace/skep-node/Cargo.toml"}
{"reason":"compiler-artifact","profile":{"test":false},"target":{"name":"skep"},"executable":"/t/skep","manifest_path":"/w/userspace/skep/Cargo.toml"}
not json"#;
        let found = executables(messages);
        assert_eq!(found.len(), 1);
        assert_eq!(
            found.get("node"),
            Some(&(
                PathBuf::from("/t/node-1"),
                PathBuf::from("/w/userspace/skep-node")
            ))
        );
    }
}
