//! `cargo xtask drift`: what this machine has that neither its image nor
//! `cargo xtask setup` gives it, so a build or test may lean on something a
//! user's fresh machine lacks (issue 13: `libprotobuf-dev` installed by hand
//! kept every CI run green while the README's commands failed on a fresh one).
//!
//! The image's own package list comes with the tool library
//! (`env/packages/installed-rust.txt`: one `source<TAB>name<TAB>version` a
//! line, Debian packages as `apt`, Python's as `pip 3.11`). Compared:
//! - Debian packages: manually installed ones that neither the image nor
//!   setup lists, with what removing them would take along (their own
//!   dependencies), plus auto-installed packages nothing needs any more. A
//!   hand-installed package that a setup package needs is no difference:
//!   setup brings it anyway.
//! - Python packages of the image's `python3`.
//! - `cargo install`ed binaries (setup installs only bpf-linker).
//! - rustup toolchains and components (the image: stable, nightly and its
//!   pinned release, each with the default profile; setup adds nightly's
//!   rust-src).
//! - Environment variables that build scripts of the dependency tree read
//!   (`PROTOC`, `LIBCLANG_PATH`, …): set here, unset on a user's machine.
//!
//! `--purge` removes what it can (packages, pip packages, cargo binaries,
//! rustup components), so the next `cargo xtask test` starts from what a
//! fresh machine plus setup has.

use std::{
    collections::BTreeSet,
    fmt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::setup;

/// Where the tool library keeps the machine image's package list.
const DEFAULT_IMAGE_LIST: &str = "/work/.library/env/packages/installed-rust.txt";

/// Toolchains the machine image comes with.
const IMAGE_TOOLCHAINS: &[&str] = &["stable", "nightly", "1.95.0"];

/// The components of rustup's default profile, which each image toolchain has.
const IMAGE_COMPONENTS: &[&str] = &[
    "cargo",
    "clippy",
    "rust-docs",
    "rust-std",
    "rustc",
    "rustfmt",
];

/// Environment variables that build scripts in skep's dependency tree read
/// (prost/tonic-build, bindgen, rocksdb, cc, aya-build) or that change every
/// build; a machine where one is set builds differently from a fresh one.
const BUILD_ENV: &[&str] = &[
    "PROTOC",
    "PROTOC_INCLUDE",
    "LIBCLANG_PATH",
    "CLANG_PATH",
    "BINDGEN_EXTRA_CLANG_ARGS",
    "ROCKSDB_LIB_DIR",
    "ROCKSDB_STATIC",
    "ROCKSDB_INCLUDE_DIR",
    "LZ4_LIB_DIR",
    "CC",
    "CXX",
    "CFLAGS",
    "CXXFLAGS",
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTC_WRAPPER",
    "SKEP_SKIP_EBPF",
    "BPF_LINKER",
];

/// Arguments of `cargo xtask drift`.
#[derive(Debug, clap::Args)]
pub struct DriftArgs {
    /// The machine image's package list (the tool library's
    /// `env/packages/installed-rust.txt`).
    #[arg(long, env = "SKEP_IMAGE_PACKAGES", default_value = DEFAULT_IMAGE_LIST)]
    image_list: PathBuf,
    /// Remove what differs (Debian and pip packages, cargo binaries, rustup
    /// components), then check again.
    #[arg(long)]
    purge: bool,
}

/// Where a difference was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    Debian,
    Pip,
    Cargo,
    Rustup,
    Env,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Debian => "debian",
            Self::Pip => "pip",
            Self::Cargo => "cargo",
            Self::Rustup => "rustup",
            Self::Env => "env",
        })
    }
}

/// One thing this machine has that a fresh one would not.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Difference {
    source: Source,
    /// Package, binary, `toolchain/component` or variable name.
    name: String,
    /// Why it counts.
    why: String,
}

/// What the machine image has, read from the tool library's list.
#[derive(Debug, Default)]
struct Image {
    debian: BTreeSet<String>,
    /// Python packages by interpreter version (`3.11`), names normalized.
    pip: BTreeSet<(String, String)>,
}

impl Image {
    /// Parses the list: `apt<TAB>name[:arch]<TAB>version`,
    /// `pip 3.11<TAB>Name<TAB>version`; other lines are ignored.
    fn parse(text: &str) -> Self {
        let mut image = Self::default();
        for line in text.lines() {
            let mut fields = line.split('\t');
            let (Some(source), Some(name)) = (fields.next(), fields.next()) else {
                continue;
            };
            if source == "apt" {
                image.debian.insert(debian_name(name).to_owned());
            } else if let Some(version) = source.strip_prefix("pip ") {
                image.pip.insert((version.to_owned(), pip_name(name)));
            }
        }
        image
    }
}

/// A Debian package name without its `:arch` suffix.
fn debian_name(name: &str) -> &str {
    name.split_once(':').map_or(name, |(n, _)| n)
}

/// A Python distribution name as pip compares them (PEP 503).
fn pip_name(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace(['_', '.'], "-")
}

/// Runs `cargo xtask drift`.
pub fn run(args: &DriftArgs) -> anyhow::Result<()> {
    let image = read_image(&args.image_list)?;
    let found = differences(&image)?;
    print(&found);
    if found.is_empty() {
        return Ok(());
    }
    if !args.purge {
        bail!(
            "{} difference(s) from a fresh machine plus setup; `cargo xtask drift --purge` removes them",
            found.len()
        );
    }
    purge(&found)?;
    let left = differences(&image)?;
    if left.is_empty() {
        eprintln!("drift: purged; this machine now has what a fresh one plus setup has");
        return Ok(());
    }
    print(&left);
    bail!("{} difference(s) left after purging", left.len())
}

/// A one-line warning for `cargo xtask test` when the machine differs; silent
/// when it does not or when the image list is not on this machine.
pub fn warn_if_drifted() {
    let Ok(image) = read_image(Path::new(DEFAULT_IMAGE_LIST)) else {
        return;
    };
    match differences(&image) {
        Ok(found) if !found.is_empty() => {
            let names: Vec<String> = found
                .iter()
                .map(|d| format!("{}:{}", d.source, d.name))
                .collect();
            eprintln!(
                "xtask test: warning: this machine has {} thing(s) a fresh one plus setup lacks, which the run may lean on: {} (`cargo xtask drift`)",
                found.len(),
                names.join(" ")
            );
        }
        Ok(_) => {}
        Err(err) => eprintln!("xtask test: warning: could not check for drift: {err:#}"),
    }
}

fn read_image(path: &Path) -> anyhow::Result<Image> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "failed to read the machine image's package list {} (--image-list)",
            path.display()
        )
    })?;
    let image = Image::parse(&text);
    if image.debian.is_empty() {
        bail!("{} lists no Debian packages", path.display());
    }
    Ok(image)
}

fn print(found: &[Difference]) {
    for d in found {
        println!("{:<7} {:<40} {}", d.source.to_string(), d.name, d.why);
    }
}

fn differences(image: &Image) -> anyhow::Result<Vec<Difference>> {
    let mut found = debian(image)?;
    found.extend(pip(image)?);
    found.extend(cargo_installs()?);
    found.extend(rustup()?);
    found.extend(BUILD_ENV.iter().filter_map(|var| {
        std::env::var_os(var).map(|value| Difference {
            source: Source::Env,
            name: (*var).to_owned(),
            why: format!(
                "set to \"{}\"; build scripts read it, a fresh machine has it unset",
                value.display()
            ),
        })
    }));
    found.sort();
    found.dedup();
    Ok(found)
}

fn setup_packages() -> BTreeSet<&'static str> {
    setup::PACKAGES.iter().map(|(name, _)| *name).collect()
}

fn debian(image: &Image) -> anyhow::Result<Vec<Difference>> {
    let installed: BTreeSet<String> =
        output(Command::new("dpkg-query").args(["-W", "-f=${db:Status-Abbrev}\t${Package}\n"]))?
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .filter(|(status, _)| status.starts_with("ii"))
            .map(|(_, name)| debian_name(name).to_owned())
            .collect();
    let manual: BTreeSet<String> = output(Command::new("apt-mark").arg("showmanual"))?
        .lines()
        .map(|l| debian_name(l.trim()).to_owned())
        .collect();
    let setup = setup_packages();
    let foreign = |name: &str| {
        installed.contains(name) && !image.debian.contains(name) && !setup.contains(name)
    };
    let mut found = Vec::new();
    for candidate in manual.iter().filter(|n| foreign(n)) {
        // What purging it would take along. If that includes something the
        // image or setup has, a package setup installs needs it: no drift.
        let removed = simulate_removal(&["purge", "--autoremove", candidate])?;
        if removed.iter().any(|r| r != candidate && !foreign(r)) {
            continue;
        }
        for r in removed {
            let why = if r == *candidate {
                "installed by hand: neither the image nor setup installs it".to_owned()
            } else {
                format!("pulled in by {candidate}")
            };
            found.push(Difference {
                source: Source::Debian,
                name: r,
                why,
            });
        }
    }
    for orphan in simulate_removal(&["autoremove"])? {
        if foreign(&orphan) {
            found.push(Difference {
                source: Source::Debian,
                name: orphan,
                why: "left over: installed as a dependency, nothing needs it now".to_owned(),
            });
        }
    }
    Ok(found)
}

/// The packages `apt-get -s <args>` says it would remove.
fn simulate_removal(args: &[&str]) -> anyhow::Result<Vec<String>> {
    let text = output(Command::new("apt-get").arg("-s").args(args))?;
    Ok(parse_removals(&text))
}

/// `Purg name [version]` / `Remv name [version]` lines of an `apt-get -s` run.
fn parse_removals(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("Purg ").or_else(|| l.strip_prefix("Remv ")))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(|name| debian_name(name).to_owned())
        .collect()
}

fn python_version() -> anyhow::Result<String> {
    Ok(output(Command::new("python3").args([
        "-c",
        "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')",
    ]))?
    .trim()
    .to_owned())
}

fn pip(image: &Image) -> anyhow::Result<Vec<Difference>> {
    if setup::which("python3").is_none() {
        return Ok(Vec::new());
    }
    let version = python_version()?;
    let listed = output(Command::new("python3").args([
        "-m",
        "pip",
        "list",
        "--format=freeze",
        "--disable-pip-version-check",
    ]))?;
    Ok(pip_extras(image, &version, &listed))
}

/// `name==version` lines whose name the image's list lacks for `version`.
fn pip_extras(image: &Image, version: &str, freeze: &str) -> Vec<Difference> {
    freeze
        .lines()
        .filter_map(|l| l.split_once("==").or_else(|| l.split_once(" @ ")))
        .map(|(name, _)| name)
        .filter(|name| !image.pip.contains(&(version.to_owned(), pip_name(name))))
        .map(|name| Difference {
            source: Source::Pip,
            name: name.to_owned(),
            why: format!("installed into python {version} by hand"),
        })
        .collect()
}

fn cargo_installs() -> anyhow::Result<Vec<Difference>> {
    let Some(home) = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
    else {
        return Ok(Vec::new());
    };
    let path = home.join(".crates2.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).with_context(|| format!("failed to read {}", path.display())),
    };
    cargo_extras(&text).with_context(|| format!("failed to parse {}", path.display()))
}

/// Installed crates (`"name version (source)"` keys of `.crates2.json`) other
/// than setup's bpf-linker at its version.
fn cargo_extras(crates2: &str) -> anyhow::Result<Vec<Difference>> {
    let json: serde_json::Value = serde_json::from_str(crates2)?;
    let installs = json
        .get("installs")
        .and_then(serde_json::Value::as_object)
        .context("no \"installs\" object")?;
    Ok(installs
        .keys()
        .filter_map(|key| {
            let mut parts = key.split_whitespace();
            let (name, version) = (parts.next()?, parts.next().unwrap_or(""));
            (name != "bpf-linker" || version != setup::BPF_LINKER_VERSION).then(|| Difference {
                source: Source::Cargo,
                name: name.to_owned(),
                why: format!(
                    "`cargo install`ed {version}; setup installs only bpf-linker {}",
                    setup::BPF_LINKER_VERSION
                ),
            })
        })
        .collect())
}

fn rustup() -> anyhow::Result<Vec<Difference>> {
    if setup::which("rustup").is_none() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))?;
    for line in toolchains.lines() {
        let Some(full) = line.split_whitespace().next() else {
            continue;
        };
        let short = full
            .strip_suffix("-x86_64-unknown-linux-gnu")
            .unwrap_or(full);
        if !IMAGE_TOOLCHAINS.contains(&short) {
            found.push(Difference {
                source: Source::Rustup,
                name: short.to_owned(),
                why: "a toolchain the image does not have".to_owned(),
            });
            continue;
        }
        let components = output(Command::new("rustup").args([
            "component",
            "list",
            "--installed",
            "--toolchain",
            full,
        ]))?;
        found.extend(component_extras(short, &components));
    }
    Ok(found)
}

/// Components beyond the default profile (and nightly's rust-src, which
/// setup adds) for the host.
fn component_extras(toolchain: &str, installed: &str) -> Vec<Difference> {
    installed
        .lines()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .filter(|c| {
            let base = c.strip_suffix("-x86_64-unknown-linux-gnu").unwrap_or(c);
            let from_setup = toolchain == "nightly" && base == "rust-src";
            !IMAGE_COMPONENTS.contains(&base) && !from_setup
        })
        .map(|c| Difference {
            source: Source::Rustup,
            name: format!("{toolchain}/{c}"),
            why: "a component neither the image nor setup adds".to_owned(),
        })
        .collect()
}

fn purge(found: &[Difference]) -> anyhow::Result<()> {
    let of = |source| -> Vec<&str> {
        found
            .iter()
            .filter(|d| d.source == source)
            .map(|d| d.name.as_str())
            .collect()
    };
    let debian = of(Source::Debian);
    if !debian.is_empty() {
        eprintln!("drift: purging {}", debian.join(" "));
        setup::run_quiet(
            Command::new("apt-get")
                .args(["purge", "-y", "-qq"])
                .args(&debian)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    let pip = of(Source::Pip);
    if !pip.is_empty() {
        eprintln!("drift: uninstalling python packages {}", pip.join(" "));
        setup::run_quiet(
            Command::new("python3")
                .args(["-m", "pip", "uninstall", "-y", "-q"])
                .args(&pip),
        )?;
    }
    for name in of(Source::Cargo) {
        eprintln!("drift: cargo uninstall {name}");
        setup::run_quiet(Command::new("cargo").args(["uninstall", name]))?;
    }
    for name in of(Source::Rustup) {
        eprintln!("drift: removing rustup {name}");
        match name.split_once('/') {
            Some((toolchain, component)) => setup::run_quiet(Command::new("rustup").args([
                "component",
                "remove",
                "--toolchain",
                toolchain,
                component,
            ]))?,
            None => setup::run_quiet(Command::new("rustup").args(["toolchain", "remove", name]))?,
        }
    }
    for name in of(Source::Env) {
        eprintln!("drift: unset {name} yourself: a process cannot clear its parent's environment");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("failed to start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = "# kinds: rust\napt\tlibc6:amd64\t2.36\napt\tgit\t1:2.39\n\
        pip 3.11\tPyYAML\t6.0\npip 3.11\tjmespath\t1.0\nnote, no package\tfoo\tbar\n";

    #[test]
    fn image_list_parses_debian_and_pip() {
        let image = Image::parse(LIST);
        assert_eq!(
            image.debian.iter().map(String::as_str).collect::<Vec<_>>(),
            ["git", "libc6"]
        );
        assert!(
            image
                .pip
                .contains(&("3.11".to_owned(), "pyyaml".to_owned()))
        );
        assert_eq!(image.pip.len(), 2);
    }

    #[test]
    fn apt_simulation_lists_what_goes() {
        let text = "Reading package lists...\nPurg libprotobuf-dev [3.21.12-3]\n\
            Remv zlib1g-dev:amd64 [1:1.2.13]\nConf foo\nInst bar (1 Debian)\n";
        assert_eq!(parse_removals(text), ["libprotobuf-dev", "zlib1g-dev"]);
    }

    #[test]
    fn pip_extras_are_what_the_image_lacks() {
        let image = Image::parse(LIST);
        let freeze = "PyYAML==6.0\nkubernetes==31.0.0\njmespath==1.0\n";
        let extras = pip_extras(&image, "3.11", freeze);
        assert_eq!(
            extras.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
            ["kubernetes"]
        );
        // Another interpreter's list does not count.
        assert_eq!(pip_extras(&image, "3.12", freeze).len(), 3);
    }

    #[test]
    fn only_setups_bpf_linker_is_expected_from_cargo() {
        let v = setup::BPF_LINKER_VERSION;
        let ok = format!(r#"{{"installs":{{"bpf-linker {v} (registry+x)":{{}}}}}}"#);
        assert!(cargo_extras(&ok).unwrap_or_default().is_empty());
        let extra = r#"{"installs":{"bpf-linker 0.13.0 (registry+x)":{},"ripgrep 14.0.0 (registry+x)":{}}}"#;
        let names: Vec<String> = cargo_extras(extra)
            .unwrap_or_default()
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert_eq!(names, ["bpf-linker", "ripgrep"]);
        assert!(cargo_extras("not json").is_err());
    }

    #[test]
    fn default_profile_components_and_nightly_rust_src_are_expected() {
        let installed = "cargo-x86_64-unknown-linux-gnu\nrust-src\nrustc-x86_64-unknown-linux-gnu\nmiri-x86_64-unknown-linux-gnu\n";
        let names = |tc| {
            component_extras(tc, installed)
                .into_iter()
                .map(|d| d.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(names("nightly"), ["nightly/miri-x86_64-unknown-linux-gnu"]);
        assert_eq!(
            names("stable"),
            ["stable/rust-src", "stable/miri-x86_64-unknown-linux-gnu"]
        );
    }
}
