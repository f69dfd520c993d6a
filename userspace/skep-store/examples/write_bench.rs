//! Rough write throughput of a single-replica store: N concurrent writers
//! creating small keys. `cargo run --profile opt -p skep-store --example
//! write_bench -- [writers] [seconds]`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use skep_store::{CompactionConfig, Store, StoreConfig};

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let mut args = std::env::args().skip(1);
    let writers: usize = args
        .next()
        .map_or(Ok(64), |a| a.parse())
        .context("writers")?;
    let seconds: u64 = args
        .next()
        .map_or(Ok(5), |a| a.parse())
        .context("seconds")?;
    let dir = tempfile::tempdir()?;
    let mut config = StoreConfig::single(dir.path());
    config.compaction = CompactionConfig {
        retain_revisions: Some(10_000),
        retain_for: None,
        interval: Duration::from_secs(1),
    };
    let store = Store::open(config).await?;
    let value = vec![b'x'; 200];
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            let value = value.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = 0_u64;
                while Instant::now() < deadline {
                    let start = Instant::now();
                    store
                        .create(format!("/registry/pods/bench/w{w}-{i}"), value.clone())
                        .await?;
                    latencies.push(start.elapsed());
                    i += 1;
                }
                Ok::<_, skep_store::StoreError>(latencies)
            })
        })
        .collect();
    let started = Instant::now();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "percentile index"
        )]
        let index = ((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1));
        latencies.get(index).copied().unwrap_or_default()
    };
    #[expect(clippy::cast_precision_loss, reason = "rate")]
    let rate = latencies.len() as f64 / elapsed.as_secs_f64();
    println!(
        "writers={writers} writes={} elapsed={elapsed:.2?} rate={rate:.0}/s p50={:.2?} p99={:.2?} max={:.2?} compacted={}",
        latencies.len(),
        pct(0.50),
        pct(0.99),
        pct(1.0),
        store.compacted_revision(),
    );
    store.shutdown().await?;
    Ok(())
}
