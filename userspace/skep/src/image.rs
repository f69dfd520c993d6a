//! `skep image …`: images in a node's store without a registry.

use std::path::PathBuf;

use anyhow::Context as _;

/// The demo image `skep up` provides: static busybox, `sh` as its command.
pub const DEMO_IMAGE: &str = "skep/busybox:demo";

/// `skep image` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// Import a `docker save` or OCI-layout tarball into the node's store.
    Import {
        /// The node's data directory (images live in <data-dir>/images).
        #[arg(long, default_value = "/var/lib/skep")]
        data_dir: PathBuf,
        /// The tarball.
        file: PathBuf,
    },
    /// Build the busybox demo image from the host's static busybox and import it.
    #[command(hide = true)]
    BuildDemo {
        /// The node's data directory.
        #[arg(long, default_value = "/var/lib/skep")]
        data_dir: PathBuf,
        /// The reference to name it.
        #[arg(long, default_value = DEMO_IMAGE)]
        reference: String,
    },
    /// List the images in the node's store.
    List {
        /// The node's data directory.
        #[arg(long, default_value = "/var/lib/skep")]
        data_dir: PathBuf,
    },
}

/// The image store of the node with data directory `data_dir`.
pub fn store(data_dir: &std::path::Path) -> anyhow::Result<skep_image::Store> {
    skep_image::Store::open(&data_dir.join("images")).context("failed to open the image store")
}

/// Builds the demo image as `reference` into `data_dir`'s store unless it is there.
pub fn ensure_demo(data_dir: &std::path::Path, reference: &str) -> anyhow::Result<()> {
    let store = store(data_dir)?;
    let normalized = skep_image::normalize_reference(reference)?;
    if store.image(&normalized)?.is_some() {
        return Ok(());
    }
    let dir = tempfile::tempdir().context("failed to create a temp dir")?;
    let tar = demo_tarball(dir.path(), reference)?;
    store.import_tarball(&tar)?;
    tracing::info!(image = %reference, "demo image imported");
    Ok(())
}

/// Builds the demo image as `reference` into an OCI tarball in `dir`.
pub fn demo_tarball(dir: &std::path::Path, reference: &str) -> anyhow::Result<PathBuf> {
    let tar = dir.join("demo.tar");
    skep_image::busybox_image(reference, &["sh"])?
        .write_oci_tarball(&tar)
        .context("failed to build the demo image")?;
    Ok(tar)
}

/// Runs an image subcommand.
pub fn run(cmd: &ImageCommand) -> anyhow::Result<()> {
    match cmd {
        ImageCommand::Import { data_dir, file } => {
            for name in store(data_dir)?
                .import_tarball(file)
                .with_context(|| format!("failed to import {}", file.display()))?
            {
                println!("{name}");
            }
        }
        ImageCommand::BuildDemo {
            data_dir,
            reference,
        } => ensure_demo(data_dir, reference)?,
        ImageCommand::List { data_dir } => {
            for image in store(data_dir)?.list()? {
                println!("{}\t{}", image.reference, image.manifest_digest);
            }
        }
    }
    Ok(())
}
