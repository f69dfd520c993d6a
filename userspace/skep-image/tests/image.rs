//! Privileged end-to-end tests of the image store: real tarballs, real
//! overlayfs mounts, a real `docker-registry` on 127.0.0.1. Run as root.

use std::fmt::Write as _;
use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use skep_image::{
    BuiltImage, ErrorKind, ImageBuilder, LayerEntry, PullPolicy, RegistryCredentials, Store,
    busybox_image, prepare_rootfs,
};

fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "skep-image end-to-end tests need root (overlayfs mounts, whiteout device nodes)"
    );
}

/// A `docker-registry serve` on a free 127.0.0.1 port, killed on drop.
struct Registry {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start(htpasswd: Option<(&str, &str)>) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = htpasswd {
            let hash = bcrypt::hash(password, 4)?;
            let file = dir.path().join("htpasswd");
            fs::write(&file, format!("{user}:{hash}\n"))?;
            write!(
                config,
                "auth:\n  htpasswd:\n    realm: skep-test\n    path: {}\n",
                file.display()
            )?;
        }
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config)?;
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("failed to start docker-registry")?;
        let registry = Self {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(&registry.addr).is_err() {
            ensure!(
                Instant::now() < deadline,
                "registry did not start listening"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(registry)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pushes a built image's blobs and manifest to `reference`.
async fn push(image: &BuiltImage, reference: &str, auth: &RegistryAuth) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..ClientConfig::default()
    });
    let r: oci_client::Reference = reference.parse()?;
    client
        .auth(&r, auth, oci_client::RegistryOperation::Push)
        .await?;
    client
        .push_blob(&r, image.config.clone(), &image.config_digest.to_string())
        .await?;
    for (digest, _, data) in &image.layers {
        client
            .push_blob(&r, data.clone(), &digest.to_string())
            .await?;
    }
    client
        .push_manifest_raw(
            &r,
            image.manifest.clone(),
            skep_image::spec::MEDIA_TYPE_OCI_MANIFEST.parse()?,
        )
        .await?;
    Ok(())
}

/// Pushes a raw manifest or index to `reference` anonymously.
async fn push_manifest(reference: &str, body: Vec<u8>, media_type: &str) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..ClientConfig::default()
    });
    let r: oci_client::Reference = reference.parse()?;
    client
        .auth(
            &r,
            &RegistryAuth::Anonymous,
            oci_client::RegistryOperation::Push,
        )
        .await?;
    client
        .push_manifest_raw(&r, body, media_type.parse()?)
        .await?;
    Ok(())
}

fn count_entries(dir: &Path) -> Result<usize> {
    Ok(fs::read_dir(dir)?.count())
}

fn run_in(rootfs: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("/usr/sbin/chroot")
        .arg(rootfs)
        .args(args)
        .output()?;
    ensure!(out.status.success(), "chroot {args:?} failed: {out:?}");
    Ok(String::from_utf8(out.stdout)?)
}

#[test]
fn busybox_oci_tarball_imports_and_runs_from_overlay() -> Result<()> {
    require_root();
    let tmp = tempfile::tempdir()?;
    let tarball = tmp.path().join("busybox.tar");
    let built = busybox_image("skep.local/busybox:demo", &["sh"])?.write_oci_tarball(&tarball)?;
    let store = Store::open(&tmp.path().join("images"))?;
    let added = store.import_tarball(&tarball)?;
    assert_eq!(added, vec!["skep.local/busybox:demo".to_string()]);

    let image = store
        .image("skep.local/busybox:demo")?
        .context("image not found after import")?;
    assert_eq!(image.manifest_digest, built.manifest_digest);
    assert_eq!(image.config_digest, built.config_digest);
    assert_eq!(image.config.cmd, vec!["sh"]);
    assert!(image.config.env.iter().any(|e| e.starts_with("PATH=")));

    let container = tmp.path().join("c1");
    let rootfs = prepare_rootfs(&image, &container)?;
    let root = rootfs.path().to_path_buf();
    assert!(fs::read_to_string(root.join("etc/passwd"))?.starts_with("root:x:0:0"));
    assert_eq!(
        fs::read_link(root.join("bin/sh"))?,
        PathBuf::from("busybox")
    );
    assert_eq!(fs::metadata(root.join("tmp"))?.mode() & 0o7777, 0o1777);
    assert_eq!(
        run_in(&root, &["/bin/sh", "-c", "echo hello from $(id -u)"])?,
        "hello from 0\n"
    );
    // Writes land in the container's upper dir, not the shared layer.
    run_in(&root, &["/bin/sh", "-c", "echo x > /tmp/written"])?;
    assert!(container.join("upper/tmp/written").is_file());
    assert!(!image.layer_dirs[0].join("tmp/written").exists());
    rootfs.release()?;
    assert!(
        !root.join("bin").exists(),
        "rootfs still mounted after release"
    );

    // Re-import is idempotent: still one layer, one ref.
    store.import_tarball(&tarball)?;
    assert_eq!(store.list()?.len(), 1);
    assert_eq!(count_entries(&tmp.path().join("images/layers/sha256"))?, 1);
    assert_eq!(count_entries(&tmp.path().join("images/tmp"))?, 0);
    Ok(())
}

#[test]
fn docker_save_tarball_imports_with_normalized_name() -> Result<()> {
    require_root();
    let tmp = tempfile::tempdir()?;
    let tarball = tmp.path().join("docker.tar");
    busybox_image("busybox", &["sleep", "3600"])?
        .gzip(true)
        .write_docker_tarball(&tarball)?;
    let store = Store::open(&tmp.path().join("images"))?;
    assert_eq!(
        store.import_tarball(&tarball)?,
        vec!["docker.io/library/busybox:latest".to_string()]
    );
    let image = store
        .image("busybox")?
        .context("busybox not found by short name")?;
    assert_eq!(image.config.cmd, vec!["sleep", "3600"]);
    assert!(image.layer_dirs[0].join("bin/busybox").is_file());

    // remove() forgets the name and deletes the now unused content.
    assert!(store.remove("busybox:latest")?);
    assert!(store.image("busybox")?.is_none());
    assert!(store.list()?.is_empty());
    assert_eq!(count_entries(&tmp.path().join("images/blobs/sha256"))?, 0);
    assert_eq!(count_entries(&tmp.path().join("images/layers/sha256"))?, 0);
    assert!(!store.remove("busybox")?);
    Ok(())
}

#[test]
fn whiteouts_and_opaque_dirs_hide_lower_layers() -> Result<()> {
    require_root();
    let tmp = tempfile::tempdir()?;
    let tarball = tmp.path().join("layers.tar");
    ImageBuilder::new("skep.local/whiteout:v1")
        .layer(vec![
            LayerEntry::dir("a"),
            LayerEntry::file("a/keep", "keep"),
            LayerEntry::file("a/gone", "gone"),
            LayerEntry::dir("o"),
            LayerEntry::file("o/old", "old"),
            LayerEntry::file("f", "one"),
            LayerEntry::Hardlink {
                path: "f-link".into(),
                target: "f".into(),
            },
        ])
        .layer(vec![
            LayerEntry::whiteout("a/gone"),
            LayerEntry::dir("o"),
            LayerEntry::opaque("o"),
            LayerEntry::file("o/new", "new"),
            LayerEntry::file("f", "two"),
        ])
        .write_oci_tarball(&tarball)?;
    let store = Store::open(&tmp.path().join("images"))?;
    store.import_tarball(&tarball)?;
    let image = store
        .image("skep.local/whiteout:v1")?
        .context("image missing")?;
    assert_eq!(image.layer_dirs.len(), 2);

    // The upper layer holds overlayfs whiteouts, not OCI marker files.
    let top = &image.layer_dirs[1];
    let wh = fs::symlink_metadata(top.join("a/gone"))?;
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "a/gone is not a 0/0 whiteout"
    );
    assert!(!top.join("a/.wh.gone").exists());
    assert!(!top.join("o/.wh..wh..opq").exists());
    assert_eq!(
        xattr::get(top.join("o"), "trusted.overlay.opaque")?,
        Some(b"y".to_vec())
    );
    // Hard links survive unpacking.
    let bottom = &image.layer_dirs[0];
    assert_eq!(
        fs::metadata(bottom.join("f"))?.ino(),
        fs::metadata(bottom.join("f-link"))?.ino()
    );

    let rootfs = prepare_rootfs(&image, &tmp.path().join("c"))?;
    let root = rootfs.path();
    assert_eq!(fs::read_to_string(root.join("a/keep"))?, "keep");
    assert!(
        !root.join("a/gone").exists(),
        "whiteout did not hide a/gone"
    );
    assert!(
        !root.join("o/old").exists(),
        "opaque dir did not hide o/old"
    );
    assert_eq!(fs::read_to_string(root.join("o/new"))?, "new");
    assert_eq!(fs::read_to_string(root.join("f"))?, "two");
    assert_eq!(fs::read_to_string(root.join("f-link"))?, "one");
    drop(rootfs); // Drop unmounts too.
    assert!(
        !tmp.path().join("c/rootfs/a").exists(),
        "rootfs still mounted after drop"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_from_registry_honours_pull_policy() -> Result<()> {
    require_root();
    let registry = Registry::start(None)?;
    let tmp = tempfile::tempdir()?;
    let reference = format!("{}/test/busybox:v1", registry.addr);
    let built = busybox_image(&reference, &["sh"])?.gzip(true).build()?;
    push(&built, &reference, &RegistryAuth::Anonymous).await?;

    let store = Store::open(&tmp.path().join("images"))?;
    let none = RegistryCredentials::anonymous();
    let err = store
        .ensure_image(&reference, PullPolicy::Never, &none)
        .await
        .err()
        .context("Never pulled a missing image")?;
    assert_eq!(err.kind(), ErrorKind::NeverPull, "{err}");

    let image = store
        .ensure_image(&reference, PullPolicy::IfNotPresent, &none)
        .await?;
    assert_eq!(image.manifest_digest, built.manifest_digest);
    assert_eq!(image.config_digest, built.config_digest);
    for (digest, _, _) in &built.layers {
        assert!(
            store.blobs().contains(digest),
            "layer blob {digest} not stored"
        );
    }
    let rootfs = prepare_rootfs(&image, &tmp.path().join("c"))?;
    assert_eq!(run_in(rootfs.path(), &["/bin/echo", "pulled"])?, "pulled\n");
    rootfs.release()?;

    // Always re-resolves but fetches nothing new.
    let again = store
        .ensure_image(&reference, PullPolicy::Always, &none)
        .await?;
    assert_eq!(again, image);

    let missing = format!("{}/test/busybox:nope", registry.addr);
    let err = store
        .ensure_image(&missing, PullPolicy::IfNotPresent, &none)
        .await
        .err()
        .context("pulled a tag that does not exist")?;
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("not found"), "{err}");

    // A multi-arch index resolves to its linux/amd64 manifest.
    let arm = busybox_image(&reference, &["arm"])?.gzip(true).build()?;
    push(
        &arm,
        &format!("{}/test/busybox:arm", registry.addr),
        &RegistryAuth::Anonymous,
    )
    .await?;
    let entry = |img: &BuiltImage, arch: &str| {
        serde_json::json!({
            "mediaType": skep_image::spec::MEDIA_TYPE_OCI_MANIFEST,
            "digest": img.manifest_digest.to_string(),
            "size": img.manifest.len(),
            "platform": {"architecture": arch, "os": "linux"},
        })
    };
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": skep_image::spec::MEDIA_TYPE_OCI_INDEX,
        "manifests": [entry(&arm, "arm64"), entry(&built, "amd64")],
    }))?;
    let multi = format!("{}/test/busybox:multi", registry.addr);
    push_manifest(&multi, index, skep_image::spec::MEDIA_TYPE_OCI_INDEX).await?;
    let picked = store
        .ensure_image(&multi, PullPolicy::Always, &none)
        .await?;
    assert_eq!(picked.manifest_digest, built.manifest_digest);
    assert_eq!(picked.config.cmd, vec!["sh"]);

    // With the registry gone, IfNotPresent is served locally, Always fails as unreachable.
    drop(registry);
    let local = store
        .ensure_image(&reference, PullPolicy::IfNotPresent, &none)
        .await?;
    assert_eq!(local.manifest_digest, built.manifest_digest);
    let err = store
        .ensure_image(&reference, PullPolicy::Always, &none)
        .await
        .err()
        .context("Always succeeded with the registry stopped")?;
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_with_htpasswd_refuses_anonymous_and_accepts_credentials() -> Result<()> {
    require_root();
    let registry = Registry::start(Some(("skep", "s3cret")))?;
    let tmp = tempfile::tempdir()?;
    let reference = format!("{}/private/busybox:v1", registry.addr);
    let built = busybox_image(&reference, &["sh"])?.build()?;
    push(
        &built,
        &reference,
        &RegistryAuth::Basic("skep".into(), "s3cret".into()),
    )
    .await?;

    let store = Store::open(&tmp.path().join("images"))?;
    let err = store
        .ensure_image(
            &reference,
            PullPolicy::IfNotPresent,
            &RegistryCredentials::anonymous(),
        )
        .await
        .err()
        .context("anonymous pull from an htpasswd registry succeeded")?;
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");

    let wrong = RegistryCredentials::anonymous().with(&registry.addr, "skep", "wrong");
    let err = store
        .ensure_image(&reference, PullPolicy::IfNotPresent, &wrong)
        .await
        .err()
        .context("pull with a wrong password succeeded")?;
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");

    let creds = RegistryCredentials::anonymous().with(&registry.addr, "skep", "s3cret");
    let image = store
        .ensure_image(&reference, PullPolicy::IfNotPresent, &creds)
        .await?;
    assert_eq!(image.manifest_digest, built.manifest_digest);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_of_one_image_leave_one_copy() -> Result<()> {
    require_root();
    let registry = Registry::start(None)?;
    let tmp = tempfile::tempdir()?;
    let reference = format!("{}/test/race:v1", registry.addr);
    let built = busybox_image(&reference, &["sh"])?
        .layer(vec![LayerEntry::file("extra", "second layer")])
        .gzip(true)
        .build()?;
    push(&built, &reference, &RegistryAuth::Anonymous).await?;

    let root = tmp.path().join("images");
    let (a, b) = (Store::open(&root)?, Store::open(&root)?);
    let none = RegistryCredentials::anonymous();
    let (ra, rb) = tokio::join!(
        a.ensure_image(&reference, PullPolicy::IfNotPresent, &none),
        b.ensure_image(&reference, PullPolicy::IfNotPresent, &none),
    );
    let (ia, ib) = (ra?, rb?);
    assert_eq!(ia, ib);
    // manifest + config + 2 layers, 2 unpacked layers, no leftovers.
    assert_eq!(count_entries(&root.join("blobs/sha256"))?, 4);
    assert_eq!(count_entries(&root.join("layers/sha256"))?, 2);
    assert_eq!(count_entries(&root.join("tmp"))?, 0);
    assert_eq!(a.list()?.len(), 1);
    if !ia.layer_dirs[1].join("extra").is_file() {
        bail!("second layer not unpacked");
    }
    Ok(())
}

#[test]
fn bad_references_and_junk_tarballs_are_rejected() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let store = Store::open(tmp.path())?;
    let err = store
        .image("UPPER/Case:bad tag")
        .err()
        .context("bad reference accepted")?;
    assert_eq!(err.kind(), ErrorKind::InvalidReference);
    fs::write(tmp.path().join("junk.tar"), b"not a tarball")?;
    let err = store
        .import_tarball(&tmp.path().join("junk.tar"))
        .err()
        .context("junk imported")?;
    assert_eq!(err.kind(), ErrorKind::InvalidImage, "{err}");
    Ok(())
}
