//! Latency histograms recorded on the hot path: fixed buckets of relaxed atomics, rendered in the
//! Prometheus text format at scrape time.
//!
//! The `metrics` facade's histogram keeps every sample in shared, growing blocks until the next
//! upkeep, which allocated on the request path and cost about 0.7 % of a profile of a
//! pgbench run; counting into fixed buckets costs a handful of comparisons and three atomic adds.
//!
//! Each session worker counts into its own copy of the buckets (`per_worker`), summed at scrape
//! time.
//!
//! What it must not do: lock, allocate or read the clock when recording (the caller measures).

use crate::per_worker::{local, Padded, SHARDS};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds: from 100 µs to 30 s (one more bucket, `+Inf`, holds
/// the rest).
pub const BUCKETS: [f64; 17] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// The same bounds in nanoseconds, for comparing without floating point.
const BOUNDS_NANOS: [u64; 17] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
];

/// A histogram of durations.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// One set of buckets per worker shard.
    shards: [Padded<Buckets>; SHARDS],
}

/// One shard's samples.
#[derive(Debug)]
struct Buckets {
    /// Samples per bucket (not cumulative); the last one is `+Inf`.
    counts: [AtomicU64; BUCKETS.len() + 1],
    /// The sum of all samples, in nanoseconds (wraps after 584 years of total latency).
    sum_nanos: AtomicU64,
}

impl Default for Buckets {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

impl LatencyHistogram {
    /// Counts one sample.
    pub fn record(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        // Most samples fall in the first buckets: a forward scan beats a binary search here.
        let bucket = BOUNDS_NANOS
            .iter()
            .position(|bound| nanos <= *bound)
            .unwrap_or(BOUNDS_NANOS.len());
        let shard = local(&self.shards);
        shard.counts[bucket].fetch_add(1, Ordering::Relaxed);
        shard.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Samples counted so far.
    pub fn count(&self) -> u64 {
        self.snapshot().count()
    }

    /// The counts as they are now, every shard's together.
    pub fn snapshot(&self) -> Snapshot {
        let mut total = Snapshot::default();
        for Padded(shard) in &self.shards {
            total.add(&Snapshot {
                counts: std::array::from_fn(|i| shard.counts[i].load(Ordering::Relaxed)),
                sum_nanos: shard.sum_nanos.load(Ordering::Relaxed),
            });
        }
        total
    }
}

/// A histogram's counts at one moment; several add up (the slots of one node name).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    counts: [u64; BUCKETS.len() + 1],
    sum_nanos: u64,
}

impl Snapshot {
    /// Samples counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds `other`'s samples.
    pub fn add(&mut self, other: &Snapshot) {
        for (sum, count) in self.counts.iter_mut().zip(other.counts) {
            *sum += count;
        }
        self.sum_nanos = self.sum_nanos.wrapping_add(other.sum_nanos);
    }
}

/// Appends one histogram family to a Prometheus text exposition: `HELP` and `TYPE` once, then
/// each series with its labels (`labels`: `node="pg0"`, or empty), cumulative buckets, `_sum`
/// and `_count`. `_count` is the buckets' total, so a scrape that races a record is still
/// consistent (only `_sum` may be a sample ahead).
pub fn render(name: &str, help: &str, series: &[(String, Snapshot)], out: &mut String) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (labels, snapshot) in series {
        let (bucket_prefix, braced) = if labels.is_empty() {
            (String::new(), String::new())
        } else {
            (format!("{labels},"), format!("{{{labels}}}"))
        };
        let mut cumulative = 0u64;
        for (bound, count) in BUCKETS.iter().zip(&snapshot.counts) {
            cumulative += count;
            let _ = writeln!(
                out,
                "{name}_bucket{{{bucket_prefix}le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += snapshot.counts[BUCKETS.len()];
        let _ = writeln!(
            out,
            "{name}_bucket{{{bucket_prefix}le=\"+Inf\"}} {cumulative}"
        );
        let sum = snapshot.sum_nanos as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{braced} {sum}");
        let _ = writeln!(out, "{name}_count{braced} {cumulative}");
    }
}

/// A label value in the exposition's quoting (backslash, double quote and newline escaped).
pub fn label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_match_the_buckets() {
        for (seconds, nanos) in BUCKETS.iter().zip(BOUNDS_NANOS) {
            assert_eq!((seconds * 1e9).round() as u64, nanos);
        }
    }

    #[test]
    fn samples_land_in_their_buckets() {
        let cases: &[(Duration, usize)] = &[
            (Duration::ZERO, 0),
            (Duration::from_micros(100), 0),
            (Duration::from_nanos(100_001), 1),
            (Duration::from_millis(1), 3),
            (Duration::from_millis(7), 6),
            (Duration::from_secs(30), 16),
            (Duration::from_secs(31), 17),
            (Duration::MAX, 17),
        ];
        for (took, bucket) in cases {
            let h = LatencyHistogram::default();
            h.record(*took);
            let counts = h.snapshot().counts.to_vec();
            let mut expected = vec![0u64; BUCKETS.len() + 1];
            expected[*bucket] = 1;
            assert_eq!(counts, expected, "{took:?}");
        }
    }

    #[test]
    fn samples_of_every_worker_shard_are_in_the_snapshot() {
        let h = std::sync::Arc::new(LatencyHistogram::default());
        let workers: Vec<_> = (0..3)
            .map(|index| {
                let h = std::sync::Arc::clone(&h);
                std::thread::spawn(move || {
                    crate::per_worker::set_thread_shard(index);
                    h.record(Duration::from_millis(index as u64 + 1));
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        let snapshot = h.snapshot();
        assert_eq!(snapshot.count(), 3);
        assert_eq!(snapshot.sum_nanos, 6_000_000);
    }

    #[test]
    fn renders_cumulative_buckets_sum_and_count() {
        let h = LatencyHistogram::default();
        h.record(Duration::from_micros(50));
        h.record(Duration::from_micros(300));
        h.record(Duration::from_secs(40));
        let mut out = String::new();
        render(
            "x_seconds",
            "Some latency",
            &[(String::new(), h.snapshot())],
            &mut out,
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "# HELP x_seconds Some latency");
        assert_eq!(lines[1], "# TYPE x_seconds histogram");
        assert_eq!(lines[2], "x_seconds_bucket{le=\"0.0001\"} 1");
        assert_eq!(lines[3], "x_seconds_bucket{le=\"0.00025\"} 1");
        assert_eq!(lines[4], "x_seconds_bucket{le=\"0.0005\"} 2");
        assert_eq!(lines[18], "x_seconds_bucket{le=\"30\"} 2");
        assert_eq!(lines[19], "x_seconds_bucket{le=\"+Inf\"} 3");
        assert_eq!(lines[20], "x_seconds_sum 40.00035");
        assert_eq!(lines[21], "x_seconds_count 3");
        assert_eq!(h.count(), 3);
    }

    #[test]
    fn labelled_series_add_up_per_label() {
        let (a, b) = (LatencyHistogram::default(), LatencyHistogram::default());
        a.record(Duration::from_millis(1));
        b.record(Duration::from_millis(2));
        let mut both = a.snapshot();
        both.add(&b.snapshot());
        assert_eq!(both.count(), 2);
        let mut out = String::new();
        let label = format!("node=\"{}\"", label_value("p\"g\\0\n"));
        render("w_seconds", "Wait", &[(label, both)], &mut out);
        assert!(
            out.contains("w_seconds_bucket{node=\"p\\\"g\\\\0\\n\",le=\"0.0025\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("w_seconds_sum{node=\"p\\\"g\\\\0\\n\"} 0.003\n"),
            "{out}"
        );
        assert!(
            out.contains("w_seconds_count{node=\"p\\\"g\\\\0\\n\"} 2\n"),
            "{out}"
        );
    }
}
