//! The kernel's run statistics of one eBPF program (`run_time_ns` and
//! `run_cnt` of `bpf_prog_info`): how long the program itself ran, summed
//! over its runs. Unlike a request rate this does not move with the rest of
//! the machine's load (the clock runs only while the program does), so a
//! per-packet cost of a few nanoseconds shows where a rate ratio drowns in
//! noise. What it cannot see: work the program causes outside itself
//! (kernel helpers run inside it and are counted; the stack's own work on
//! the packet is not).
//!
//! The kernel counts only while statistics are enabled: [`StatsEnabled`]
//! holds `BPF_ENABLE_STATS` (the `kernel.bpf_stats_enabled` switch as a
//! reference the kernel drops when the descriptor closes, so the setting is
//! back as it was even when the bench dies).

use std::{ops::AddAssign, os::fd::OwnedFd, path::Path};

use anyhow::Context as _;
use aya::{
    programs::SchedClassifier,
    sys::{Stats, enable_stats},
};
use serde_json::json;

/// Run statistics are collected while this lives.
pub struct StatsEnabled(#[expect(dead_code, reason = "held for its drop")] OwnedFd);

impl StatsEnabled {
    /// Turns the kernel's BPF run statistics on (root).
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self(enable_stats(Stats::RunTime).context(
            "failed to enable BPF run statistics (BPF_ENABLE_STATS)",
        )?))
    }
}

/// Runs and the time spent in them (a difference of two readings, or a sum
/// of such differences).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgStats {
    /// Program runs (one per packet for a TC program).
    pub runs: u64,
    /// Nanoseconds spent in those runs.
    pub nanos: u64,
}

impl ProgStats {
    /// What happened between `earlier` and `self` (two readings).
    #[must_use]
    pub fn since(self, earlier: Self) -> Self {
        Self {
            runs: self.runs.saturating_sub(earlier.runs),
            nanos: self.nanos.saturating_sub(earlier.nanos),
        }
    }

    /// Mean nanoseconds per run (NaN without runs).
    #[must_use]
    pub fn per_run(self) -> f64 {
        ratio(self.nanos, self.runs)
    }

    /// As JSON (for the client child's report).
    pub fn json(self) -> serde_json::Value {
        json!({"runs": self.runs, "nanos": self.nanos})
    }

    /// From [`Self::json`]'s output (zero where missing).
    pub fn from_json(v: &serde_json::Value) -> Self {
        Self {
            runs: v["runs"].as_u64().unwrap_or(0),
            nanos: v["nanos"].as_u64().unwrap_or(0),
        }
    }
}

impl AddAssign for ProgStats {
    fn add_assign(&mut self, more: Self) {
        self.runs += more.runs;
        self.nanos += more.nanos;
    }
}

/// `a / b` as a float (NaN for `b == 0`).
#[expect(
    clippy::cast_precision_loss,
    reason = "counts of runs and nanoseconds, far below 2^52"
)]
pub fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        f64::NAN
    } else {
        a as f64 / b as f64
    }
}

/// Reads one pinned program's statistics (one `bpf_obj_get_info_by_fd`).
pub struct ProgReader(SchedClassifier);

impl ProgReader {
    /// Opens the TC program pinned at `path`.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        Ok(Self(SchedClassifier::from_pin(path).with_context(
            || format!("failed to open the program pinned at {}", path.display()),
        )?))
    }

    /// The program's totals now.
    pub fn read(&self) -> anyhow::Result<ProgStats> {
        let info = self.0.info().context("failed to read the program's info")?;
        Ok(ProgStats {
            runs: info.run_count(),
            nanos: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
        })
    }
}
