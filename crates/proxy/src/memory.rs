//! The process-wide budget for client read buffers (`client.max_buffer_memory`).
//!
//! Every client connection reads into a buffer of [`BASE_BUFFER`] bytes that costs nothing here:
//! those are bounded by `client.max_connections`. A buffer grows beyond it only to gather one
//! message that routing must read whole (a statement up to `routing.max_parse_size`) or a
//! pipeline of such messages; that growth is taken from this budget and given back as soon as
//! the buffer is empty again. When the budget is spent, a session stops reading from its client
//! (TCP pushes back on the client) until memory is freed; if none is freed soon, the message it
//! was gathering streams to the primary unclassified instead (see `session::intake`), so no
//! session ever waits on another for memory.
//!
//! What it must not do: block, or count anything but client read buffers.

use std::sync::atomic::{AtomicUsize, Ordering};

/// A client buffer's size that is not taken from the budget.
pub const BASE_BUFFER: usize = 16 * 1024;

/// Bytes of client buffers beyond their [`BASE_BUFFER`], process-wide.
#[derive(Debug, Default)]
pub struct BufferBudget {
    used: AtomicUsize,
    /// `0`: no limit. Set from the configuration, at start and on every reload.
    limit: AtomicUsize,
    /// Woken whenever bytes are given back.
    freed: tokio::sync::Notify,
}

impl BufferBudget {
    /// A budget of `limit` bytes (`0`: no limit).
    pub fn new(limit: usize) -> Self {
        let budget = Self::default();
        budget.set_limit(limit);
        budget
    }

    /// A reload changed `client.max_buffer_memory`. Buffers already grown keep their bytes.
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
        self.freed.notify_waiters();
    }

    /// Takes `bytes` if the budget has them; `false` leaves it untouched.
    pub fn try_take(&self, bytes: usize) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                let after = used.checked_add(bytes)?;
                (limit == 0 || after <= limit).then_some(after)
            })
            .is_ok()
    }

    /// Gives back bytes taken earlier and wakes the sessions waiting for memory.
    pub fn give_back(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        self.used.fetch_sub(bytes, Ordering::AcqRel);
        self.freed.notify_waiters();
    }

    /// Bytes taken now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The limit in force (`0`: none).
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Resolves when bytes are given back after this call began waiting.
    pub async fn freed(&self) {
        self.freed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_within_the_limit_and_gives_back() {
        let budget = BufferBudget::new(100);
        assert!(budget.try_take(60));
        assert!(!budget.try_take(41), "past the limit");
        assert_eq!(budget.used(), 60);
        assert!(budget.try_take(40));
        budget.give_back(60);
        assert_eq!(budget.used(), 40);
        assert!(budget.try_take(60));
        assert!(!budget.try_take(1));
    }

    #[test]
    fn zero_means_no_limit_and_a_smaller_limit_refuses_new_growth() {
        let budget = BufferBudget::new(0);
        assert!(budget.try_take(usize::MAX / 2));
        budget.set_limit(10);
        assert!(!budget.try_take(1));
        budget.give_back(usize::MAX / 2);
        assert!(budget.try_take(10));
        assert!(!budget.try_take(usize::MAX));
    }
}
