//! A bounded cache of classifications keyed by statement text.
//!
//! Two generations approximate LRU without per-hit bookkeeping: lookups check the young map, then
//! the old one (promoting a hit); when the young map is full it becomes the old one and the
//! previous old map is dropped. Memory is bounded by twice the capacity.
//!
//! Not thread-safe on purpose: each worker thread (or session) owns one, so the hot path takes no
//! lock.

use crate::decision::Classification;
use crate::Classifier;
use std::collections::HashMap;
use std::sync::Arc;

/// Statements longer than this are classified every time instead of being cached (they are rare
/// and would take most of the memory).
const MAX_CACHED_LEN: usize = 4096;

/// Bounded classification cache.
#[derive(Debug)]
pub struct ClassificationCache {
    capacity: usize,
    young: HashMap<Box<str>, Arc<Classification>>,
    old: HashMap<Box<str>, Arc<Classification>>,
    hits: u64,
    misses: u64,
    plain_select: Arc<Classification>,
    plain_dml: Arc<Classification>,
    generation: u64,
}

impl ClassificationCache {
    /// A cache holding up to about `capacity` statements (at most twice that).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            young: HashMap::new(),
            old: HashMap::new(),
            hits: 0,
            misses: 0,
            plain_select: Arc::new(Classification::new(
                crate::decision::Route::Read,
                crate::decision::Rule::ReadOnlyQuery,
            )),
            plain_dml: Arc::new(Classification::new(
                crate::decision::Route::Primary,
                crate::decision::Rule::Write,
            )),
            generation: 0,
        }
    }

    /// Forgets every entry when the classifier changed (a configuration reload with other
    /// function lists): `generation` identifies the classifier in use.
    pub fn start_generation(&mut self, generation: u64) {
        if generation != self.generation {
            self.generation = generation;
            self.young.clear();
            self.old.clear();
        }
    }

    /// The classification of `sql`, from the cache or freshly computed. Plain `SELECT`s and plain
    /// DML take the lexical fast path and are not cached (they often differ only by literals).
    pub fn classify(&mut self, classifier: &Classifier, sql: &str) -> Arc<Classification> {
        match crate::fast::scan(sql) {
            Some(crate::fast::Fast::PlainSelect) if crate::hints::leading_hint(sql).is_none() => {
                return Arc::clone(&self.plain_select);
            }
            Some(crate::fast::Fast::PlainDml) => return Arc::clone(&self.plain_dml),
            _ => {}
        }
        if let Some(c) = self.young.get(sql) {
            self.hits += 1;
            return Arc::clone(c);
        }
        if let Some((k, c)) = self.old.remove_entry(sql) {
            self.hits += 1;
            self.insert(k, Arc::clone(&c));
            return c;
        }
        self.misses += 1;
        let c = Arc::new(classifier.classify(sql));
        if sql.len() <= MAX_CACHED_LEN {
            self.insert(sql.into(), Arc::clone(&c));
        }
        c
    }

    fn insert(&mut self, key: Box<str>, value: Arc<Classification>) {
        if self.young.len() >= self.capacity {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(key, value);
    }

    /// (hits, misses) since creation.
    pub fn stats(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    /// Number of cached statements.
    pub fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_hits() {
        let classifier = Classifier::default();
        let mut cache = ClassificationCache::new(4);
        for i in 0..100 {
            cache.classify(&classifier, &format!("SELECT {i}, nextval('s')"));
            assert!(cache.len() <= 8);
        }
        let a = cache.classify(&classifier, "SELECT 99, nextval('s')");
        let b = cache.classify(&classifier, "SELECT 99, nextval('s')");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(cache.stats(), (2, 100));
    }
}
