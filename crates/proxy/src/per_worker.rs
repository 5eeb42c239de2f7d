//! Counters and histograms each session worker bumps in its own cache line, summed when read
//! (at scrape time, by the console). With several workers, one shared atomic per counter would
//! bounce its cache line between cores on every request.
//!
//! A thread picks its shard once ([`set_thread_shard`]: the session workers do); every other
//! thread, and the only thread with `worker_threads: 1`, uses shard 0. More workers than shards
//! share them, modulo.
//!
//! What it must not do: lock, allocate after construction, or be read on the request path.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// Shards a counter has: workers beyond this share (a 16-core machine gets one each).
pub const SHARDS: usize = 16;

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(0) };
}

/// Makes the calling thread count into shard `index` (modulo [`SHARDS`]).
pub fn set_thread_shard(index: usize) {
    SHARD.with(|shard| shard.set(index % SHARDS));
}

/// The calling thread's shard of `shards`.
pub(crate) fn local<T>(shards: &[Padded<T>; SHARDS]) -> &T {
    // `set_thread_shard` keeps the index below SHARDS.
    &shards[SHARD.with(Cell::get) % SHARDS].0
}

/// A value alone on its cache line (two lines: adjacent-line prefetching pairs them).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Padded<T>(pub T);

/// A monotonic counter.
#[derive(Debug, Default)]
pub struct Counter {
    shards: [Padded<AtomicU64>; SHARDS],
}

impl Counter {
    /// Adds `n` (relaxed, to the calling thread's shard).
    pub fn add(&self, n: u64) {
        local(&self.shards).fetch_add(n, Ordering::Relaxed);
    }

    /// The total over all shards.
    pub fn get(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_thread_counts_in_its_shard_and_the_total_has_them_all() {
        let counter = std::sync::Arc::new(Counter::default());
        let threads: Vec<_> = (0..SHARDS + 3)
            .map(|index| {
                let counter = std::sync::Arc::clone(&counter);
                std::thread::spawn(move || {
                    set_thread_shard(index);
                    for _ in 0..1000 {
                        counter.add(1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        counter.add(5);
        assert_eq!(counter.get(), (SHARDS as u64 + 3) * 1000 + 5);
        assert!(counter
            .shards
            .iter()
            .all(|s| s.0.load(Ordering::Relaxed) >= 1000));
    }
}
