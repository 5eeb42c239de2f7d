//! The running part: one health task per node, one aggregator that publishes the routing table,
//! and the [`Topology`] handle sessions read it through.

use crate::decide::{decide, NodeInput, Policy};
use crate::health::Health;
use crate::observation::Observation;
use crate::probe::{NodeProbe, SqlProbe};
use crate::table::RoutingTable;
use arc_swap::ArcSwap;
use arc_swap::ArcSwapOption;
use pgrouter_config::{Discovery, HealthCheckLogin};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// A node to watch.
#[derive(Debug, Clone)]
pub struct NodeTarget {
    /// Configured name.
    pub name: String,
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Read weight.
    pub weight: u32,
    /// Patroni REST API, for Patroni discovery.
    pub patroni_url: Option<String>,
}

/// How the nodes are watched.
#[derive(Debug, Clone)]
pub struct MonitorSettings {
    /// Where roles come from.
    pub discovery: Discovery,
    /// Time between probes of a node.
    pub interval: Duration,
    /// Time one probe may take.
    pub timeout: Duration,
    /// Failures before a node is marked down.
    pub max_failures: u32,
    /// Successes before a down node returns.
    pub min_successes: u32,
    /// The probes' login.
    pub login: HealthCheckLogin,
    /// Lag thresholds.
    pub policy: Policy,
}

/// The published routing table and the means to wait for changes. Shared by every session.
#[derive(Debug)]
pub struct Topology {
    table: ArcSwap<RoutingTable>,
    generation: watch::Sender<u64>,
    nodes: Vec<NodeTarget>,
    disabled: Vec<AtomicBool>,
    /// Counters for metrics and the admin console.
    pub stats: TopologyStats,
    /// The last primary seen (`usize::MAX`: none yet), to count failovers across a gap.
    last_primary: AtomicUsize,
    /// Read weights, changed by a reload.
    weights: Vec<AtomicU32>,
    /// Settings a reload may change (interval, thresholds, lag policy), once started.
    live: ArcSwapOption<MonitorSettings>,
}

/// What the health checks and the aggregator counted since start-up.
#[derive(Debug)]
pub struct TopologyStats {
    /// Routing tables published with a different shape (primary, a role or a state changed).
    pub table_swaps: AtomicU64,
    /// Times the primary became a different node than the last one known.
    pub failovers: AtomicU64,
    /// Health checks run, per node.
    pub checks: Vec<AtomicU64>,
    /// Health checks that failed, per node.
    pub check_failures: Vec<AtomicU64>,
}

impl Topology {
    /// A topology that knows nothing yet: no primary, no readers, until [`Topology::start`]'s
    /// first probes report.
    pub fn new(nodes: Vec<NodeTarget>) -> Arc<Self> {
        let names: Vec<(String, String, u16)> = nodes
            .iter()
            .map(|n| (n.name.clone(), n.host.clone(), n.port))
            .collect();
        Arc::new(Self {
            table: ArcSwap::from_pointee(RoutingTable::unknown(&names)),
            generation: watch::Sender::new(0),
            disabled: nodes.iter().map(|_| AtomicBool::new(false)).collect(),
            stats: TopologyStats {
                table_swaps: AtomicU64::new(0),
                failovers: AtomicU64::new(0),
                checks: nodes.iter().map(|_| AtomicU64::new(0)).collect(),
                check_failures: nodes.iter().map(|_| AtomicU64::new(0)).collect(),
            },
            last_primary: AtomicUsize::new(usize::MAX),
            weights: nodes.iter().map(|n| AtomicU32::new(n.weight)).collect(),
            live: ArcSwapOption::empty(),
            nodes,
        })
    }

    /// The current table: a lock-free load, for every routing decision.
    pub fn load(&self) -> arc_swap::Guard<Arc<RoutingTable>> {
        self.table.load()
    }

    /// The current table, kept (for callers that hold it across awaits).
    pub fn snapshot(&self) -> Arc<RoutingTable> {
        self.table.load_full()
    }

    /// The configured nodes.
    pub fn nodes(&self) -> &[NodeTarget] {
        &self.nodes
    }

    /// Changes a node's read weight; applied at the next probe.
    pub fn set_weight(&self, node: usize, weight: u32) {
        if let Some(w) = self.weights.get(node) {
            w.store(weight, Ordering::Relaxed);
        }
    }

    /// Replaces the interval, thresholds, lag policy, and the probes' login and timeout; applied
    /// from the next probe. (The discovery mode is fixed at start.)
    pub fn update_settings(&self, settings: MonitorSettings) {
        if self.live.load().is_some() {
            self.live.store(Some(Arc::new(settings)));
        }
    }

    /// Takes a node out of read rotation (or back); applied at the next probe.
    pub fn set_disabled(&self, node: usize, disabled: bool) {
        if let Some(flag) = self.disabled.get(node) {
            flag.store(disabled, Ordering::Relaxed);
        }
    }

    /// Waits until `pick` finds what it needs in the table (e.g. a primary), or until `timeout`;
    /// then returns `pick` of the table at that moment.
    pub async fn wait_for<T>(
        &self,
        timeout: Duration,
        pick: impl Fn(&RoutingTable) -> Option<T>,
    ) -> Option<T> {
        // Subscribe before looking, so a change between the look and the wait is not missed.
        let mut changes = self.generation.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(found) = pick(&self.table.load()) {
                return Some(found);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return pick(&self.table.load()),
            }
        }
    }

    /// Waits for the next change of the table's shape, at most `timeout`.
    pub async fn changed(&self, timeout: Duration) {
        let mut changes = self.generation.subscribe();
        let _ = tokio::time::timeout(timeout, changes.changed()).await;
    }

    /// Publishes a table built elsewhere (tests, and the aggregator).
    fn publish(&self, mut table: RoutingTable) {
        let before = self.table.load();
        let reshaped = !table.same_shape(&before);
        table.generation = before.generation + u64::from(reshaped);
        let now = crate::table::unix_now();
        for (row, old) in table.nodes.iter_mut().zip(&before.nodes) {
            row.last_change = if row.role == old.role && row.state == old.state {
                old.last_change
            } else {
                now
            };
        }
        if reshaped {
            self.stats.table_swaps.fetch_add(1, Ordering::Relaxed);
            for line in table.describe_changes(&before) {
                tracing::info!(generation = table.generation, "topology change: {line}");
            }
        }
        if let Some(primary) = table.primary {
            let last = self.last_primary.swap(primary, Ordering::Relaxed);
            if last != usize::MAX && last != primary {
                self.stats.failovers.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.table.store(Arc::new(table));
        if reshaped {
            self.generation.send_replace(self.table.load().generation);
        }
    }

    /// Starts one health task per node and the aggregator; they stop with `shutdown`.
    pub fn start(
        self: &Arc<Self>,
        settings: MonitorSettings,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let initial = Arc::new(settings.clone());
        self.live.store(Some(Arc::clone(&initial)));
        let (results, mut incoming) =
            mpsc::channel::<(usize, Result<Observation, String>)>(self.nodes.len().max(1) * 4);
        let mut tasks = JoinSet::new();
        for (index, node) in self.nodes.iter().enumerate() {
            let pg = probe_config(node, &settings);
            let mut probe = NodeProbe::new(
                SqlProbe::new(pg),
                settings.discovery,
                node.patroni_url.clone(),
                settings.timeout,
            );
            let results = results.clone();
            let stop = shutdown.clone();
            let duration = metrics::histogram!("pgrouter_health_check_duration_seconds", "node" => node.name.clone());
            let topology = Arc::clone(self);
            let (mut login, mut timeout) = (settings.login.clone(), settings.timeout);
            tasks.spawn(async move {
                let mut next = tokio::time::Instant::now();
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep_until(next) => {}
                    }
                    let current = topology.live.load_full();
                    let interval = current
                        .as_ref()
                        .map_or(Duration::from_secs(1), |s| s.interval);
                    if let Some(s) = current.filter(|s| (&s.login, s.timeout) != (&login, timeout))
                    {
                        // A reload changed the probes' login or timeout.
                        (login, timeout) = (s.login.clone(), s.timeout);
                        probe.update(probe_config(&topology.nodes[index], &s), timeout);
                    }
                    next = (next + interval).max(tokio::time::Instant::now());
                    let started = std::time::Instant::now();
                    let outcome = probe.probe().await;
                    duration.record(started.elapsed().as_secs_f64());
                    let stats = &topology.stats;
                    stats.checks[index].fetch_add(1, Ordering::Relaxed);
                    if outcome.is_err() {
                        stats.check_failures[index].fetch_add(1, Ordering::Relaxed);
                    }
                    if results.send((index, outcome)).await.is_err() {
                        return;
                    }
                }
            });
        }
        drop(results);
        let topology = Arc::clone(self);
        tokio::spawn(async move {
            let n = topology.nodes.len();
            let mut health = vec![Health::default(); n];
            let mut latest: Vec<Option<Observation>> = vec![None; n];
            let mut errors: Vec<Option<String>> = vec![None; n];
            let mut max_timeline = 0u32;
            loop {
                let (index, outcome) = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    next = incoming.recv() => match next {
                        Some(next) => next,
                        None => break,
                    },
                };
                let ok = outcome.is_ok();
                let settings = topology
                    .live
                    .load_full()
                    .unwrap_or_else(|| Arc::clone(&initial));
                health[index].record(ok, settings.max_failures, settings.min_successes);
                match outcome {
                    Ok(mut obs) => {
                        // A replica of an idle primary briefly has received but unreplayed WAL
                        // (a checkpoint record) while its last replayed transaction is old: one
                        // probe alone would call that lag. Real lag shows in two in a row.
                        if let (Some(now), Some(before)) = (
                            obs.replay_delay,
                            latest[index].as_ref().and_then(|o| o.replay_delay),
                        ) {
                            obs.replay_delay = Some(now.min(before));
                        }
                        if let Some(tl) = obs
                            .timeline
                            .or(obs.manager.as_ref().and_then(|m| m.timeline))
                        {
                            max_timeline = max_timeline.max(tl);
                        }
                        latest[index] = Some(obs);
                        errors[index] = None;
                    }
                    Err(e) => {
                        if errors[index].as_deref() != Some(e.as_str()) {
                            tracing::debug!(node = %topology.nodes[index].name, error = %e, "health check failed");
                        }
                        errors[index] = Some(e);
                    }
                }
                let inputs: Vec<NodeInput<'_>> = topology
                    .nodes
                    .iter()
                    .enumerate()
                    .map(|(i, node)| NodeInput {
                        name: &node.name,
                        host: &node.host,
                        port: node.port,
                        weight: topology.weights[i].load(Ordering::Relaxed),
                        health: health[i].state(),
                        observation: latest[i].as_ref(),
                        last_error: errors[i].as_deref(),
                        disabled: topology.disabled[i].load(Ordering::Relaxed),
                    })
                    .collect();
                topology.publish(decide(&inputs, &settings.policy, max_timeline));
            }
            tasks.shutdown().await;
        })
    }
}

/// The probes' connection settings for a node.
fn probe_config(node: &NodeTarget, settings: &MonitorSettings) -> tokio_postgres::Config {
    let mut pg = tokio_postgres::Config::new();
    pg.host(&node.host)
        .port(node.port)
        .user(&settings.login.user)
        .password(&settings.login.password)
        .dbname(&settings.login.database)
        .application_name("pgrouter health check")
        .connect_timeout(settings.timeout);
    pg
}
