//! `cargo xtask bench authz`: what authentication and authorization cost a
//! request. One API server (in this process, on a real store) answers the
//! same GET and create as:
//! - the admin (`system:masters`: the authorizer allows it before RBAC is
//!   consulted, so this is the request path without RBAC — the baseline);
//! - a user with a client certificate whose RoleBinding allows it, with no
//!   other bindings and then with 10,000 RoleBindings for other users in
//!   the cluster (the policy is indexed by subject, so this should not move);
//! - a ServiceAccount bearer token allowed by a RoleBinding (token
//!   verification and its bound-object checks against the store).
//!
//! Each cluster state (one RoleBinding; 10,000 more for other users) is
//! measured in rounds in which the callers take turns, so the shared
//! machine's noise falls on all of them alike. Prints p50/p99 and
//! requests/s per caller, and each against the admin in the same state.
#![expect(
    clippy::doc_markdown,
    reason = "Kubernetes kind names (RoleBinding, ServiceAccount) are plain words in these docs"
)]

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use skep_apiserver::{ApiServer, ApiServerConfig};
use skep_store::{Store, StoreConfig};

use crate::stats::{Sample, print_group};

/// Sequential requests per caller and operation.
const OPS: usize = 2_000;
/// Concurrent GETs: clients and how long.
const CLIENTS: usize = 16;
const CONCURRENT_FOR: Duration = Duration::from_secs(3);
/// RoleBindings for other users in the crowded cluster.
const OTHER_BINDINGS: usize = 10_000;

/// One way of calling the API.
#[derive(Clone)]
struct Caller {
    client: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Caller {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.client.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self.request(method, path);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{path}: {status}: {}", value["message"]);
        }
        Ok(value)
    }

    async fn get(&self) -> anyhow::Result<()> {
        self.send(
            reqwest::Method::GET,
            "/api/v1/namespaces/bench/configmaps/target",
            None,
        )
        .await
        .map(drop)
    }

    async fn create(&self, name: &str) -> anyhow::Result<()> {
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "bench"}, "data": {"k": "v"}});
        self.send(
            reqwest::Method::POST,
            "/api/v1/namespaces/bench/configmaps",
            Some(&body),
        )
        .await
        .map(drop)
    }
}

async fn sequential_gets(caller: &Caller, n: usize) -> anyhow::Result<Sample> {
    let mut latencies = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        caller.get().await?;
        latencies.push(t.elapsed());
    }
    Ok(Sample {
        ops: n,
        elapsed: start.elapsed(),
        latencies,
    })
}

async fn concurrent_gets(caller: &Caller, run_for: Duration) -> anyhow::Result<Sample> {
    let start = Instant::now();
    let deadline = start + run_for;
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let caller = caller.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                caller.get().await?;
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    Ok(Sample {
        ops: latencies.len(),
        elapsed: start.elapsed(),
        latencies,
    })
}

async fn creates(caller: &Caller, tag: &str, n: usize) -> anyhow::Result<Sample> {
    let mut latencies = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        caller.create(&format!("{tag}-{i}")).await?;
        latencies.push(t.elapsed());
    }
    Ok(Sample {
        ops: n,
        elapsed: start.elapsed(),
        latencies,
    })
}

/// A RoleBinding of Role `configmaps` in `bench` to `kind`/`name`.
fn binding(name: &str, kind: &str, subject: &str) -> Value {
    let subject = if kind == "ServiceAccount" {
        json!({"kind": kind, "name": subject, "namespace": "bench"})
    } else {
        json!({"kind": kind, "name": subject, "apiGroup": "rbac.authorization.k8s.io"})
    };
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": "bench"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "configmaps"},
        "subjects": [subject]})
}

/// Waits until `caller` may GET (the authorizer's watch has the binding).
async fn wait_allowed(caller: &Caller) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match caller.get().await {
            Ok(()) => return Ok(()),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => return Err(err.context("the binding never took effect")),
        }
    }
}

/// Creates `n` RoleBindings for other users, 32 at a time.
async fn crowd(admin: &Caller, n: usize) -> anyhow::Result<()> {
    let mut next = 0;
    while next < n {
        let batch: Vec<_> = (next..(next + 32).min(n))
            .map(|i| {
                let admin = admin.clone();
                tokio::spawn(async move {
                    admin
                        .send(
                            reqwest::Method::POST,
                            BINDINGS,
                            Some(&binding(
                                &format!("other-{i}"),
                                "User",
                                &format!("user-{i}"),
                            )),
                        )
                        .await
                })
            })
            .collect();
        for task in batch {
            task.await??;
        }
        next += 32;
    }
    Ok(())
}

const BINDINGS: &str = "/apis/rbac.authorization.k8s.io/v1/namespaces/bench/rolebindings";

/// A user with a client certificate, bound to Role `configmaps` in `bench`.
async fn user_caller(admin: &Caller, data_dir: &Path, dir: &Path) -> anyhow::Result<Caller> {
    let jane_config = dir.join("jane.kubeconfig");
    let pki = skep_apiserver::pki::Pki::load_or_create(&data_dir.join("pki"), &[])?;
    std::fs::write(
        &jane_config,
        skep_apiserver::kubeconfig::for_user(&admin.base, &pki, "jane", &["dev"])?,
    )?;
    let (client, _) = crate::api::tls_client(&jane_config)?;
    let jane = Caller {
        client,
        base: admin.base.clone(),
        token: None,
    };
    admin
        .send(
            reqwest::Method::POST,
            BINDINGS,
            Some(&binding("jane", "User", "jane")),
        )
        .await?;
    wait_allowed(&jane).await?;
    Ok(jane)
}

/// A ServiceAccount's token, bound to Role `configmaps` in `bench`: TLS without a
/// client certificate, the token in the Authorization header.
async fn token_caller(admin: &Caller, data_dir: &Path) -> anyhow::Result<Caller> {
    admin
        .send(
            reqwest::Method::POST,
            "/api/v1/namespaces/bench/serviceaccounts",
            Some(&json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot"}})),
        )
        .await?;
    let issued = admin
        .send(
            reqwest::Method::POST,
            "/api/v1/namespaces/bench/serviceaccounts/robot/token",
            Some(&json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}})),
        )
        .await?;
    let token = issued["status"]["token"]
        .as_str()
        .context("no token in the TokenRequest")?
        .to_owned();
    admin
        .send(
            reqwest::Method::POST,
            BINDINGS,
            Some(&binding("robot", "ServiceAccount", "robot")),
        )
        .await?;
    let ca = std::fs::read(data_dir.join("pki/ca.crt"))?;
    let robot = Caller {
        client: reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&ca)?])
            .build()?,
        base: admin.base.clone(),
        token: Some(token),
    };
    wait_allowed(&robot).await?;
    Ok(robot)
}

/// Runs the benchmark and prints its table.
/// Rounds each measurement is split into, callers taking turns.
const ROUNDS: usize = 5;

/// Each caller's GET (sequential), GET (concurrent) and create samples,
/// measured in [`ROUNDS`] rounds in which the callers take turns.
async fn measure<'a>(
    callers: &[(&'a str, &Caller)],
    tag: &str,
) -> anyhow::Result<Vec<(&'a str, [Sample; 3])>> {
    let empty = || Sample {
        ops: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    let mut out: Vec<(&str, [Sample; 3])> = callers
        .iter()
        .map(|(name, _)| (*name, [empty(), empty(), empty()]))
        .collect();
    for round in 0..ROUNDS {
        for (i, (_, caller)) in callers.iter().enumerate() {
            let samples = [
                sequential_gets(caller, OPS / ROUNDS).await?,
                concurrent_gets(caller, CONCURRENT_FOR / u32::try_from(ROUNDS)?).await?,
                creates(caller, &format!("{tag}{i}-{round}"), OPS / 2 / ROUNDS).await?,
            ];
            for (into, sample) in out[i].1.iter_mut().zip(samples) {
                into.ops += sample.ops;
                into.elapsed += sample.elapsed;
                into.latencies.extend(sample.latencies);
            }
        }
    }
    Ok(out)
}

/// Waits until the authorizer's policy holds the binding of `user` (the
/// last one [`crowd`] made), asked through a SubjectAccessReview.
async fn wait_in_policy(admin: &Caller, user: &str) -> anyhow::Result<()> {
    let review = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": user, "resourceAttributes":
            {"namespace": "bench", "verb": "get", "resource": "configmaps"}}});
    let deadline = Instant::now() + Duration::from_mins(1);
    loop {
        let answer = admin
            .send(
                reqwest::Method::POST,
                "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                Some(&review),
            )
            .await?;
        if answer["status"]["allowed"] == true {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the policy never saw {user}'s binding: {answer}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(StoreConfig::single(dir.path().join("store"))).await?;
    let data_dir = dir.path().join("api");
    let server = ApiServer::bind(
        &ApiServerConfig {
            data_dir: data_dir.clone(),
            listen: "127.0.0.1:0".parse()?,
            ..ApiServerConfig::default()
        },
        store.clone(),
    )
    .await?;
    let kubeconfig = server.kubeconfig().to_owned();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(async {
        let _ = stop_rx.await;
    }));

    let (client, base) = crate::api::tls_client(&kubeconfig)?;
    let admin = Caller {
        client,
        base: base.clone(),
        token: None,
    };
    admin
        .send(
            reqwest::Method::POST,
            "/api/v1/namespaces",
            Some(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}})),
        )
        .await?;
    admin.create("target").await?;
    // What the callers are bound to (no controllers run here, so the
    // aggregated `edit` would have no rules).
    admin
        .send(
            reqwest::Method::POST,
            "/apis/rbac.authorization.k8s.io/v1/namespaces/bench/roles",
            Some(&json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "configmaps"},
                "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "create"]}]})),
        )
        .await?;

    let jane = user_caller(&admin, &data_dir, dir.path()).await?;
    let robot = token_caller(&admin, &data_dir).await?;

    println!(
        "skep authz benchmark: {OPS} sequential GETs, {CLIENTS} clients of GETs for {}s and {} sequential creates per caller and cluster state, in {ROUNDS} interleaved rounds (noise falls on every caller alike); ConfigMaps in one namespace.",
        CONCURRENT_FOR.as_secs(),
        OPS / 2
    );
    let quiet = measure(
        &[("admin (no RBAC; baseline)", &admin), ("user cert", &jane)],
        "q",
    )
    .await?;
    let started = Instant::now();
    crowd(&admin, OTHER_BINDINGS).await?;
    let crowd_took = started.elapsed();
    wait_in_policy(&admin, &format!("user-{}", OTHER_BINDINGS - 1)).await?;
    let crowded = measure(
        &[
            ("admin (no RBAC; baseline)", &admin),
            ("user cert", &jane),
            ("SA token", &robot),
        ],
        "c",
    )
    .await?;
    let states = [
        ("1 RoleBinding", &quiet),
        ("10,000 more RoleBindings", &crowded),
    ];
    for (op, index, rate) in [
        ("GET one ConfigMap (1 client)".to_owned(), 0, false),
        (format!("GET one ConfigMap ({CLIENTS} clients)"), 1, true),
        ("create a ConfigMap (1 client)".to_owned(), 2, false),
    ] {
        for (state, rows) in states {
            let rows: Vec<(&str, &Sample)> = rows
                .iter()
                .map(|(name, samples)| (*name, &samples[index]))
                .collect();
            print_group(&format!("{op}, {state}"), &rows, rate);
        }
    }
    println!(
        "\n{OTHER_BINDINGS} RoleBindings created in {:.1}s. Aim: authorization cost independent of the number of bindings; p99 within 5% of the path without RBAC.",
        crowd_took.as_secs_f64()
    );
    let _ = stop_tx.send(());
    let _ = serving.await;
    store.shutdown().await?;
    Ok(())
}
