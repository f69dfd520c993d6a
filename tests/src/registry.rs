//! A real OCI registry for tests: Debian's `docker-registry` on a free
//! 127.0.0.1 port, with an empty store, optionally behind htpasswd basic
//! auth. Killed, and its directory removed, when the value drops.

use std::{
    fmt::Write as _,
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// The user of an auth-requiring [`Registry`].
pub const USER: &str = "skep";
/// `USER`'s password (the bcrypt hash below is of this).
pub const PASSWORD: &str = "s3cret";
/// bcrypt of [`PASSWORD`], as an htpasswd file holds it.
const PASSWORD_BCRYPT: &str = "$2b$12$aM06hGtUYmEgx8INyhJtDuy2QXpBiy4H2VRiNUGNdn5S94yQJ.UNe";

/// A running `docker-registry serve`.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry; with `auth`, every request needs [`USER`]'s
    /// password (anonymous and wrong credentials get 401).
    pub fn start(auth: bool) -> anyhow::Result<Self> {
        let binary = Path::new("/usr/bin/docker-registry");
        if !binary.is_file() {
            bail!("docker-registry is not installed (cargo xtask setup installs it)");
        }
        let dir = tempfile::tempdir()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if auth {
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, format!("{USER}:{PASSWORD_BCRYPT}\n"))?;
            write!(
                config,
                "auth:\n  htpasswd:\n    realm: skep-test\n    path: {}\n",
                file.display()
            )?;
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config)?;
        let child = Command::new(binary)
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
            if Instant::now() > deadline {
                bail!("docker-registry did not listen on {}", registry.addr);
            }
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
