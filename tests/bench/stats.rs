//! Latency samples and the table the benchmarks print.

use std::time::Duration;

/// One measured workload: how many operations in how long, and each one's latency.
#[derive(Clone)]
pub struct Sample {
    /// Operations completed.
    pub ops: usize,
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// Per-operation latencies.
    pub latencies: Vec<Duration>,
}

impl Sample {
    /// Operations per second.
    pub fn rate(&self) -> f64 {
        #[expect(clippy::cast_precision_loss, reason = "op counts are far below 2^52")]
        let ops = self.ops as f64;
        ops / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile (0..=1) of the latencies.
    pub fn quantile(&self, q: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "an index into a short vector"
        )]
        let index = ((sorted.len() - 1) as f64 * q).round() as usize;
        sorted[index.min(sorted.len() - 1)]
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Prints one group of rows; the first row is the baseline the others are
/// compared with.
pub fn print_group(title: &str, rows: &[(&str, &Sample)], rate_matters: bool) {
    println!("\n{title}");
    println!(
        "  {:<28} {:>12} {:>10} {:>10} {:>12}",
        "", "ops/s", "p50", "p99", "vs baseline"
    );
    let base = rows.first().map(|(_, s)| (s.rate(), s.quantile(0.99)));
    for (name, sample) in rows {
        let ratio = match base {
            Some((rate, _)) if rate_matters => format!("{:.2}x rate", sample.rate() / rate),
            Some((_, p99)) => format!(
                "{:.2}x p99",
                sample.quantile(0.99).as_secs_f64() / p99.as_secs_f64().max(1e-9)
            ),
            None => String::new(),
        };
        println!(
            "  {:<28} {:>12.0} {:>10} {:>10} {:>12}",
            name,
            sample.rate(),
            ms(sample.quantile(0.5)),
            ms(sample.quantile(0.99)),
            ratio
        );
    }
}
