//! An append-only list with lock-free reads, for per-node state (pools, counters, health).
//!
//! Node indexes are *slots*: a slot is given to a node when it first appears in the
//! configuration and is never reused, so an index held by a session stays meaningful after a
//! reload adds, removes or re-addresses nodes. A removed node keeps its slot (marked removed by
//! its owner); the list only grows. Reads are one `arc-swap` load; growing copies the list of
//! `Arc`s, which happens only on a reload.
//!
//! What it must not do: shrink, reorder, or hand out an index twice.

use arc_swap::ArcSwap;
use std::sync::Arc;

/// Slot-indexed items; see the crate docs.
#[derive(Debug)]
pub struct Slots<T> {
    items: ArcSwap<Vec<Arc<T>>>,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Self {
            items: ArcSwap::from_pointee(Vec::new()),
        }
    }
}

impl<T> FromIterator<T> for Slots<T> {
    fn from_iter<I: IntoIterator<Item = T>>(items: I) -> Self {
        Self {
            items: ArcSwap::from_pointee(items.into_iter().map(Arc::new).collect()),
        }
    }
}

impl<T> Slots<T> {
    /// The item in slot `index`, if there is one yet.
    pub fn get(&self, index: usize) -> Option<Arc<T>> {
        self.items.load().get(index).cloned()
    }

    /// Runs `f` on slot `index` without taking a reference count (for hot paths).
    pub fn with<R>(&self, index: usize, f: impl FnOnce(&T) -> R) -> Option<R> {
        self.items.load().get(index).map(|item| f(item))
    }

    /// Slots handed out so far.
    pub fn len(&self) -> usize {
        self.items.load().len()
    }

    /// Whether no slot was handed out.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every slot, in index order, as of now.
    pub fn snapshot(&self) -> Arc<Vec<Arc<T>>> {
        self.items.load_full()
    }

    /// Appends `item`; returns its index.
    pub fn push(&self, item: T) -> usize {
        let item = Arc::new(item);
        let before = self.items.rcu(|items| {
            let mut grown = Vec::with_capacity(items.len() + 1);
            grown.extend(items.iter().cloned());
            grown.push(Arc::clone(&item));
            grown
        });
        before.len()
    }

    /// Grows the list to at least `len` slots, filling new ones with `make(index)`.
    pub fn grow_to(&self, len: usize, make: impl Fn(usize) -> T) {
        if self.len() >= len {
            return;
        }
        self.items.rcu(|items| {
            let mut grown: Vec<Arc<T>> = items.iter().cloned().collect();
            while grown.len() < len {
                grown.push(Arc::new(make(grown.len())));
            }
            grown
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_hands_out_consecutive_indexes_and_keeps_old_items() {
        let slots: Slots<&str> = ["a", "b"].into_iter().collect();
        let held = slots.get(1);
        assert_eq!(slots.push("c"), 2);
        assert_eq!(slots.len(), 3);
        assert_eq!(slots.get(2).as_deref(), Some(&"c"));
        assert!(Arc::ptr_eq(&held.unwrap(), &slots.get(1).unwrap()));
        assert_eq!(slots.get(3), None);
    }

    #[test]
    fn grow_to_never_shrinks() {
        let slots: Slots<usize> = Slots::default();
        slots.grow_to(3, |i| i * 10);
        slots.grow_to(1, |_| 99);
        assert_eq!(slots.len(), 3);
        assert_eq!(slots.with(2, |v| *v), Some(20));
    }

    #[test]
    fn concurrent_pushes_get_distinct_indexes() {
        let slots = Arc::new(Slots::<usize>::default());
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let slots = Arc::clone(&slots);
                std::thread::spawn(move || {
                    (0..50).map(|i| slots.push(t * 100 + i)).collect::<Vec<_>>()
                })
            })
            .collect();
        let mut indexes: Vec<usize> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect();
        indexes.sort_unstable();
        assert_eq!(indexes, (0..200).collect::<Vec<_>>());
    }
}
