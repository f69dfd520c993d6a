//! The `skep` binary's command line, run as a user would: help, version and
//! a bad command line. (Privileged checks live in the e2e tests.)

use std::process::{Command, Output};

fn skep(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skep"))
        .args(args)
        .output()
        .expect("the skep binary runs")
}

#[test]
fn help_and_version_work() {
    let help = skep(&["--help"]);
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).expect("utf-8");
    for command in ["up", "check", "bpf", "version"] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(command)),
            "{command} missing from --help:\n{help}"
        );
    }

    let version = skep(&["version"]);
    assert!(version.status.success());
    let version = String::from_utf8(version.stdout).expect("utf-8");
    assert!(
        version.starts_with(&format!("skep {}", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    assert!(version.contains("skep_metrics_ingress"), "{version}");
}

#[test]
fn bad_command_line_exits_2() {
    let out = skep(&["no-such-command"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn ct_list_without_a_datapath_says_so_in_one_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pin_dir = dir.path().join("no-node");
    let pin_dir = pin_dir.to_str().expect("utf-8 path");
    let out = skep(&["bpf", "ct", "list", "--pin-dir", pin_dir]);
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("failed to read the conntrack pinned in") && stderr.contains("SKEP_CT"),
        "{stderr}"
    );
}

#[test]
fn agent_without_its_shim_says_so_in_one_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("skep-shim");
    let missing = missing.to_str().expect("utf-8 path");
    let data_dir = dir.path().to_str().expect("utf-8 path");
    let out = skep(&[
        "agent",
        "--kubeconfig",
        "/no/such/kubeconfig",
        "--data-dir",
        data_dir,
        "--node-name",
        "cli-test",
        "--shim",
        missing,
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("no container shim at {missing}")),
        "{stderr}"
    );
}
