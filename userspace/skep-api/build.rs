//! Compiles the vendored Kubernetes `generated.proto` files (`proto/k8s/`) into
//! a `FileDescriptorSet` that `src/protobuf.rs` embeds. Source info (comments)
//! is kept on purpose: the decoder reads the `+optional` markers from it.

use std::{env, error::Error, path::PathBuf, process::Command};

/// The vendored files, relative to `proto/k8s/` (imports come along).
const PROTOS: &[&str] = &[
    "k8s.io/api/core/v1/generated.proto",
    "k8s.io/api/apps/v1/generated.proto",
    "k8s.io/api/autoscaling/v1/generated.proto",
    "k8s.io/api/discovery/v1/generated.proto",
    "k8s.io/api/networking/v1/generated.proto",
    "k8s.io/api/authentication/v1/generated.proto",
    "k8s.io/api/authorization/v1/generated.proto",
    "k8s.io/api/rbac/v1/generated.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let proto_dir = manifest_dir.join("../../proto/k8s");
    println!("cargo:rerun-if-changed={}", proto_dir.display());
    println!("cargo:rerun-if-env-changed=PROTOC");
    let out = PathBuf::from(env::var("OUT_DIR")?).join("k8s.fds");
    let protoc = env::var_os("PROTOC").unwrap_or_else(|| "protoc".into());
    let output = Command::new(&protoc)
        .arg("--include_imports")
        .arg("--include_source_info")
        .arg(format!("--descriptor_set_out={}", out.display()))
        .arg(format!("--proto_path={}", proto_dir.display()))
        .args(PROTOS)
        .output()
        .map_err(|err| {
            format!(
                "failed to run {} ({err}): install protoc with `cargo xtask setup` (Debian protobuf-compiler) or set PROTOC",
                protoc.to_string_lossy()
            )
        })?;
    if !output.status.success() {
        return Err(format!(
            "protoc failed on proto/k8s: {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(())
}
