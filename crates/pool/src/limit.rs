//! A node's limit on checked-out connections, shared by every session worker thread.
//!
//! Checked on every check-out and check-in in transaction pooling, from every worker: the
//! common case, a permit free and nobody waiting, is one compare-and-swap to take a permit and
//! one atomic add to return it. Only clients that must wait use a fair (FIFO) queue, tokio's
//! semaphore, whose release takes a lock; a permit returned while anyone waits goes to that queue.
//!
//! Permits are in one of three places: `spare` (free, for the taking), the queue (free, for
//! the first waiter), or held by a [`Held`]. A waiter counts itself in `waiting` before it
//! looks at `spare` one last time, and a release adds to `spare` before it looks at `waiting`
//! (both sequentially consistent), so a permit returned just as a client starts to wait is
//! seen by one of the two: none is left in `spare` while a waiter sleeps.
//!
//! What it must not do: hand out more permits than its size, or let a client that arrives
//! while others wait take a permit ahead of them (beyond that race window).

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// The limit of one node (see the module docs).
#[derive(Debug)]
pub(crate) struct Limit {
    /// Free permits that need no queue.
    spare: AtomicUsize,
    /// Clients waiting in, or about to enter, the queue.
    waiting: AtomicUsize,
    /// The waiters' queue and the permits set aside for them.
    queue: Semaphore,
}

/// One permit, returned when dropped.
#[derive(Debug)]
pub(crate) struct Held(Arc<Limit>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.release(1);
    }
}

impl Limit {
    pub(crate) fn new(size: usize) -> Self {
        Self {
            spare: AtomicUsize::new(size),
            waiting: AtomicUsize::new(0),
            queue: Semaphore::new(0),
        }
    }

    /// Free permits now.
    pub(crate) fn available(&self) -> usize {
        self.spare.load(SeqCst) + self.queue.available_permits()
    }

    /// A permit if one is free and nobody waits for one.
    pub(crate) fn try_hold(self: &Arc<Self>) -> Option<Held> {
        if self.waiting.load(SeqCst) > 0 {
            return None;
        }
        // A permit left in the queue by a waiter that gave up counts as free too.
        let taken = self.take_spare() || self.queue.try_acquire().map(|p| p.forget()).is_ok();
        taken.then(|| Held(Arc::clone(self)))
    }

    /// A permit: at once when one is free, else in turn behind earlier waiters. Cancel-safe:
    /// dropping the future leaves the queue.
    pub(crate) async fn hold(self: &Arc<Self>) -> Held {
        if let Some(held) = self.try_hold() {
            return held;
        }
        self.wait_for(1).await;
        Held(Arc::clone(self))
    }

    /// Takes `n` permits out of circulation for good (the limit shrank): the free ones now,
    /// returns how many are still owed (held by clients).
    pub(crate) fn forget(&self, n: usize) -> usize {
        let mut owed = n;
        while owed > 0 && self.take_spare() {
            owed -= 1;
        }
        owed - self.queue.forget_permits(owed)
    }

    /// Adds `n` permits (the limit grew).
    pub(crate) fn add(&self, n: usize) {
        self.release(n);
    }

    /// Waits in turn for `n` permits and keeps them (retiring permits clients held when the
    /// limit shrank).
    pub(crate) async fn retire(self: Arc<Self>, n: usize) {
        self.wait_for(n).await;
    }

    /// Waits in the queue for `n` permits, which the caller then owns.
    async fn wait_for(&self, n: usize) {
        self.waiting.fetch_add(1, SeqCst);
        let _counted = Waiting(&self.waiting);
        let mut needed = n;
        // A permit returned just before this waiter counted itself may sit in `spare`.
        while needed > 0 && self.take_spare() {
            needed -= 1;
        }
        if needed == 0 {
            return;
        }
        let needed = u32::try_from(needed).unwrap_or(u32::MAX);
        // The queue is never closed: `Err` cannot happen, and would only mean no permit.
        if let Ok(permits) = self.queue.acquire_many(needed).await {
            permits.forget();
        }
    }

    fn take_spare(&self) -> bool {
        self.spare
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    fn release(&self, n: usize) {
        if self.waiting.load(SeqCst) > 0 {
            self.queue.add_permits(n);
            return;
        }
        self.spare.fetch_add(n, SeqCst);
        // A client that started to wait after the look above may have missed these: move what
        // is still spare to the queue, where it will find them.
        if self.waiting.load(SeqCst) > 0 {
            let mut moved = 0;
            while moved < n && self.take_spare() {
                moved += 1;
            }
            if moved > 0 {
                self.queue.add_permits(moved);
            }
        }
    }
}

/// One waiter counted in `waiting` until dropped (served, or its future dropped).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[test]
    fn permits_are_taken_and_returned_without_the_queue() {
        let limit = Arc::new(Limit::new(2));
        let a = limit.try_hold().expect("first");
        let b = limit.try_hold().expect("second");
        assert!(limit.try_hold().is_none(), "only two");
        assert_eq!(limit.available(), 0);
        drop(a);
        assert_eq!(limit.available(), 1);
        let c = limit.try_hold().expect("returned one");
        drop((b, c));
        assert_eq!(limit.available(), 2);
    }

    #[tokio::test]
    async fn waiters_are_served_in_order_and_newcomers_queue_behind_them() {
        let limit = Arc::new(Limit::new(1));
        let held = limit.try_hold().expect("the only permit");
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for i in 0..3 {
            let (limit, order) = (Arc::clone(&limit), Arc::clone(&order));
            waiters.push(tokio::spawn(async move {
                let held = limit.hold().await;
                order.lock().unwrap().push(i);
                tokio::task::yield_now().await;
                drop(held);
            }));
            // Each in the queue before the next starts.
            tokio::task::yield_now().await;
        }
        assert!(limit.try_hold().is_none(), "no barging past waiters");
        drop(held);
        for w in waiters {
            tokio::time::timeout(Duration::from_secs(5), w)
                .await
                .expect("served")
                .expect("no panic");
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
        assert_eq!(limit.available(), 1);
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_leaves_no_permit_stranded() {
        let limit = Arc::new(Limit::new(1));
        let held = limit.try_hold().expect("the only permit");
        let gave_up = tokio::time::timeout(Duration::from_millis(20), limit.hold()).await;
        assert!(gave_up.is_err());
        drop(held);
        assert!(limit.try_hold().is_some(), "the permit is free again");
    }

    #[tokio::test]
    async fn shrinking_retires_free_permits_now_and_held_ones_as_they_return() {
        let limit = Arc::new(Limit::new(3));
        let held = limit.try_hold().expect("one held");
        let owed = limit.forget(3);
        assert_eq!(owed, 1, "two free ones forgotten, the held one owed");
        let retiring = tokio::spawn(Arc::clone(&limit).retire(owed));
        tokio::task::yield_now().await;
        drop(held);
        tokio::time::timeout(Duration::from_secs(5), retiring)
            .await
            .expect("retired")
            .expect("no panic");
        assert_eq!(limit.available(), 0);
        limit.add(2);
        assert_eq!(limit.available(), 2);
    }

    /// Many threads taking and returning permits, some waiting: never more than the size held
    /// at once, and nobody left waiting while a permit is free.
    #[test]
    fn under_contention_the_size_holds_and_no_waiter_is_forgotten() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            const SIZE: usize = 3;
            let limit = Arc::new(Limit::new(SIZE));
            let inside = Arc::new(AtomicUsize::new(0));
            let most = Arc::new(AtomicUsize::new(0));
            let tasks: Vec<_> = (0..16)
                .map(|_| {
                    let (limit, inside, most) =
                        (Arc::clone(&limit), Arc::clone(&inside), Arc::clone(&most));
                    tokio::spawn(async move {
                        for round in 0..2_000 {
                            let held = match limit.try_hold() {
                                Some(h) => h,
                                None => limit.hold().await,
                            };
                            let now = inside.fetch_add(1, SeqCst) + 1;
                            most.fetch_max(now, SeqCst);
                            if round % 7 == 0 {
                                tokio::task::yield_now().await;
                            }
                            inside.fetch_sub(1, SeqCst);
                            drop(held);
                        }
                    })
                })
                .collect();
            for t in tasks {
                tokio::time::timeout(Duration::from_secs(60), t)
                    .await
                    .expect("no waiter stuck while permits were free")
                    .expect("no panic");
            }
            assert!(most.load(SeqCst) <= SIZE, "held at once: {most:?}");
            assert_eq!(limit.available(), SIZE, "every permit came back");
        });
    }
}
