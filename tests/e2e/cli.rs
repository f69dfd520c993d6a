//! The `skep` binary on this host: `skep check` passes, and says in one line
//! with the documented exit code what is missing when something is.

use std::process::Command;

use skep_e2e::{process, require_root};

/// Exit code for "this host cannot run skep as it is".
const HOST_NOT_READY: i32 = 3;

fn stderr_line(out: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one line on stderr, got:\n{stderr}"
    );
    lines[0].to_owned()
}

#[test]
fn check_passes_on_this_host() -> anyhow::Result<()> {
    require_root!();
    let out = process::skep(&["check"])?;
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout)?;
    assert!(
        stdout.contains("the kernel loads skep's eBPF programs"),
        "{stdout}"
    );
    Ok(())
}

#[test]
fn unprivileged_check_says_root_in_one_line() -> anyhow::Result<()> {
    require_root!();
    let skep = process::skep_binary()?;
    // Drop to nobody with no capabilities.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(&skep)
        .arg("check")
        .output()?;
    assert_eq!(out.status.code(), Some(HOST_NOT_READY), "{out:?}");
    let line = stderr_line(&out);
    assert!(
        line.contains("must run as root") && line.contains("CAP_BPF"),
        "{line}"
    );
    Ok(())
}

#[test]
fn missing_btf_is_named() -> anyhow::Result<()> {
    require_root!();
    let out = process::skep(&["check", "--btf", "/nonexistent/vmlinux"])?;
    assert_eq!(out.status.code(), Some(HOST_NOT_READY), "{out:?}");
    let line = stderr_line(&out);
    assert!(
        line.contains("no kernel BTF at /nonexistent/vmlinux"),
        "{line}"
    );
    Ok(())
}

#[test]
fn missing_bpffs_is_named() -> anyhow::Result<()> {
    require_root!();
    let dir = std::env::temp_dir();
    let out = process::skep(&["check", "--bpffs", &dir.to_string_lossy()])?;
    assert_eq!(out.status.code(), Some(HOST_NOT_READY), "{out:?}");
    let line = stderr_line(&out);
    assert!(
        line.contains("no bpffs mounted at") && line.contains("mount -t bpf"),
        "{line}"
    );
    Ok(())
}
