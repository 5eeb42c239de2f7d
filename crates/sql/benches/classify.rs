//! Classifier cost: cached and uncached, for the statements pgbench sends.
//! Run with `cargo bench -p pgrouter-sql`; numbers are recorded in docs/benchmarks.md.

#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pgrouter_sql::{ClassificationCache, Classifier};

const STATEMENTS: &[(&str, &str)] = &[
    ("select_1", "SELECT 1"),
    (
        "pgbench_select",
        "SELECT abalance FROM pgbench_accounts WHERE aid = 4242;",
    ),
    (
        "pgbench_update",
        "UPDATE pgbench_accounts SET abalance = abalance + -4711 WHERE aid = 4242;",
    ),
    ("begin", "BEGIN;"),
    (
        "join_cte",
        "WITH recent AS (SELECT * FROM orders WHERE created_at > now() - interval '1 day') \
         SELECT c.name, count(*) FROM customers c JOIN recent r ON r.customer_id = c.id \
         GROUP BY c.name ORDER BY 2 DESC LIMIT 10",
    ),
];

fn bench(c: &mut Criterion) {
    let classifier = Classifier::default();
    let mut uncached = c.benchmark_group("uncached");
    for (name, sql) in STATEMENTS {
        uncached.bench_function(*name, |b| b.iter(|| classifier.classify(black_box(sql))));
    }
    uncached.finish();
    let mut cached = c.benchmark_group("cached");
    for (name, sql) in STATEMENTS {
        let mut cache = ClassificationCache::new(1024);
        cache.classify(&classifier, sql);
        cached.bench_function(*name, |b| {
            b.iter(|| cache.classify(&classifier, black_box(sql)))
        });
    }
    cached.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
