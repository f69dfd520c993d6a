//! `skep kubeconfig user`: a kubeconfig for a new user, signed by the
//! cluster CA (as `kubeadm kubeconfig user --client-name … --org …`). The
//! user can do nothing until RBAC grants it something.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use skep_apiserver::{kubeconfig, pki::Pki};

/// `skep kubeconfig …`.
#[derive(Debug, clap::Subcommand)]
pub enum KubeconfigCommand {
    /// Print a kubeconfig for a user with a new client certificate
    /// (CN = the user, O = each group).
    User(UserArgs),
}

/// Arguments of `skep kubeconfig user`.
#[derive(Debug, clap::Args)]
pub struct UserArgs {
    /// The control plane's data directory (its `pki/` signs the certificate).
    #[arg(long, default_value = "/var/lib/skep")]
    data_dir: PathBuf,
    /// The user name (the certificate's CN).
    #[arg(long)]
    client_name: String,
    /// A group of the user (the certificate's O); repeatable.
    #[arg(long = "org")]
    orgs: Vec<String>,
    /// The API server URL; defaults to the one in `<data-dir>/kubeconfig`.
    #[arg(long)]
    server: Option<String>,
}

/// Runs `skep kubeconfig …`.
pub fn run(cmd: &KubeconfigCommand) -> anyhow::Result<()> {
    match cmd {
        KubeconfigCommand::User(args) => user(args),
    }
}

fn user(args: &UserArgs) -> anyhow::Result<()> {
    let pki_dir = args.data_dir.join("pki");
    if !pki_dir.join("ca.crt").is_file() || !pki_dir.join("ca.key").is_file() {
        bail!(
            "no cluster CA in {} (is --data-dir the control plane's?)",
            pki_dir.display()
        );
    }
    if args.client_name.is_empty() {
        bail!("--client-name must not be empty");
    }
    let server = if let Some(server) = &args.server {
        server.clone()
    } else {
        let admin = args.data_dir.join("kubeconfig");
        let text = std::fs::read_to_string(&admin)
            .with_context(|| format!("failed to read {}", admin.display()))?;
        kubeconfig::server_of(&text)
            .with_context(|| format!("{} names no server", admin.display()))?
    };
    let pki = Pki::load_or_create(&pki_dir, &[]).context("failed to load the cluster PKI")?;
    let groups: Vec<&str> = args.orgs.iter().map(String::as_str).collect();
    let config = kubeconfig::for_user(&server, &pki, &args.client_name, &groups)
        .context("failed to issue the user's certificate")?;
    print!("{config}");
    Ok(())
}
