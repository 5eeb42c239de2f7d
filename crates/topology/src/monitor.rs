//! The running part: one health task per node, one aggregator that publishes the routing table,
//! and the [`Topology`] handle sessions read it through.

use crate::decide::{decide, NodeInput, Policy};
use crate::health::Health;
use crate::observation::Observation;
use crate::probe::{NodeProbe, SqlProbe};
use crate::table::RoutingTable;
use arc_swap::ArcSwap;
use pgrouter_config::{Discovery, HealthCheckLogin};
use std::sync::atomic::{AtomicBool, Ordering};
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
        if reshaped {
            for line in table.describe_changes(&before) {
                tracing::info!(generation = table.generation, "topology change: {line}");
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
        let (results, mut incoming) =
            mpsc::channel::<(usize, Result<Observation, String>)>(self.nodes.len().max(1) * 4);
        let mut tasks = JoinSet::new();
        for (index, node) in self.nodes.iter().enumerate() {
            let mut pg = tokio_postgres::Config::new();
            pg.host(&node.host)
                .port(node.port)
                .user(&settings.login.user)
                .password(&settings.login.password)
                .dbname(&settings.login.database)
                .application_name("pgrouter health check")
                .connect_timeout(settings.timeout);
            let mut probe = NodeProbe::new(
                SqlProbe::new(pg),
                settings.discovery,
                node.patroni_url.clone(),
                settings.timeout,
            );
            let results = results.clone();
            let interval = settings.interval;
            let stop = shutdown.clone();
            tasks.spawn(async move {
                let mut ticks = tokio::time::interval(interval);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = ticks.tick() => {}
                    }
                    let outcome = probe.probe().await;
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
                        weight: node.weight,
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
