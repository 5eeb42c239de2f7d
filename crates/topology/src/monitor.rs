//! The running part: one health task per node, one aggregator that publishes the routing table,
//! and the [`Topology`] handle sessions read it through.

use crate::decide::{decide, NodeInput, Policy};
use crate::health::Health;
use crate::observation::Observation;
use crate::probe::{NodeProbe, ProbeLogin, Pushed, SqlProbe};
use crate::table::RoutingTable;
use arc_swap::ArcSwap;
use arc_swap::ArcSwapOption;
use pgrouter_config::{Discovery, HealthCheckLogin};
use pgrouter_slots::Slots;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify};
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
    /// Patroni and repmgr discovery: add the members the HA manager lists that are not
    /// configured (fixed at start, like `discovery`).
    pub discover_members: bool,
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
    /// `server_tls:`, for the probes' connections.
    pub server_tls: Arc<pgrouter_conn::ServerTls>,
    /// `topology.patroni:`, for Patroni's REST API.
    pub patroni_api: Arc<crate::http::HttpClient>,
    /// `tcp_keepalive:`, for the probes' connections.
    pub keepalive: Option<pgrouter_conn::Keepalive>,
    /// Lag thresholds.
    pub policy: Policy,
}

/// One configured node for as long as it stays in the configuration with the same name and
/// address. Its index (slot) is never reused: a reload that re-addresses a node gives it a new
/// slot and marks the old one removed, so an index a session holds never points at another
/// server.
#[derive(Debug)]
pub struct NodeSlot {
    /// Name and address.
    pub target: NodeTarget,
    weight: AtomicU32,
    disabled: AtomicBool,
    removed: AtomicBool,
    /// Found in the HA manager's member list, not configured (`topology.discover_members`).
    discovered: AtomicBool,
    /// Health checks run.
    pub checks: AtomicU64,
    /// Health checks that failed.
    pub check_failures: AtomicU64,
    /// When and how long health checks ran, for Pgpool-II's `SHOW POOL_HEALTH_CHECK_STATS`.
    pub check_times: CheckTimes,
}

/// Times of a node's health checks: the last of each outcome (Unix seconds, 0: never) and the
/// shortest, longest and total duration (milliseconds). Written by the node's probe task only.
#[derive(Debug, Default)]
pub struct CheckTimes {
    /// The last check, whatever its outcome.
    pub last: AtomicU64,
    /// The last check that succeeded.
    pub last_success: AtomicU64,
    /// The last check that failed.
    pub last_failure: AtomicU64,
    /// Sum of every check's duration.
    pub total_ms: AtomicU64,
    /// The shortest check (`u64::MAX` before the first).
    pub min_ms: AtomicU64,
    /// The longest check.
    pub max_ms: AtomicU64,
}

impl CheckTimes {
    /// Records one check that ended at `now` (Unix seconds) after `took`.
    pub fn record(&self, now: u64, took: Duration, ok: bool) {
        let ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
        let outcome = if ok {
            &self.last_success
        } else {
            &self.last_failure
        };
        outcome.store(now, Ordering::Relaxed);
        self.total_ms.fetch_add(ms, Ordering::Relaxed);
        self.min_ms.fetch_min(ms, Ordering::Relaxed);
        self.max_ms.fetch_max(ms, Ordering::Relaxed);
    }
}

impl NodeSlot {
    fn new(target: NodeTarget) -> Self {
        Self {
            weight: AtomicU32::new(target.weight),
            target,
            disabled: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            discovered: AtomicBool::new(false),
            checks: AtomicU64::new(0),
            check_failures: AtomicU64::new(0),
            check_times: CheckTimes {
                min_ms: AtomicU64::new(u64::MAX),
                ..CheckTimes::default()
            },
        }
    }

    /// The read weight in force (configured, or changed by a reload).
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Taken out of read rotation by an operator.
    pub fn is_disabled(&self) -> bool {
        self.disabled.load(Ordering::Relaxed)
    }

    /// No longer in the configuration: not probed, never routed to.
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Relaxed)
    }

    /// Found in the HA manager's member list rather than configured.
    pub fn is_discovered(&self) -> bool {
        self.discovered.load(Ordering::Relaxed)
    }

    /// The same server as `target`: name, host, port and Patroni URL all equal.
    fn is(&self, target: &NodeTarget) -> bool {
        let t = &self.target;
        (&t.name, &t.host, t.port, &t.patroni_url)
            == (&target.name, &target.host, target.port, &target.patroni_url)
    }
}

/// What [`Topology::reconfigure`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeChanges {
    /// The slot of each configured node, in configuration order.
    pub slots: Vec<usize>,
    /// Slots given to nodes new to the configuration (or re-addressed).
    pub added: Vec<usize>,
    /// Slots of nodes no longer in the configuration (or re-addressed).
    pub removed: Vec<usize>,
}

/// The published routing table and the means to wait for changes. Shared by every session.
#[derive(Debug)]
pub struct Topology {
    table: ArcSwap<RoutingTable>,
    generation: watch::Sender<u64>,
    slots: Slots<NodeSlot>,
    /// Counters for metrics and the admin console.
    pub stats: TopologyStats,
    /// The last primary seen (`usize::MAX`: none yet), to count failovers across a gap.
    last_primary: AtomicUsize,
    /// Settings a reload may change (interval, thresholds, lag policy), once started.
    live: ArcSwapOption<MonitorSettings>,
    /// Wakes the aggregator when a reload added or removed nodes.
    reconfigured: Notify,
    /// One reconfiguration at a time (reloads only; sessions never take it).
    reconfiguring: Mutex<()>,
    /// Bumped to ask every node's probe to run now ([`Topology::probe_now`]).
    urgent: watch::Sender<u64>,
}

/// What the aggregator counted since start-up (per-node counts are in each [`NodeSlot`]).
#[derive(Debug, Default)]
pub struct TopologyStats {
    /// Routing tables published with a different shape (primary, a role or a state changed).
    pub table_swaps: AtomicU64,
    /// Times the primary became a different node than the last one known.
    pub failovers: AtomicU64,
}

impl Topology {
    /// A topology that knows nothing yet: no primary, no readers, until [`Topology::start`]'s
    /// first probes report.
    pub fn new(nodes: Vec<NodeTarget>) -> Arc<Self> {
        let topology = Arc::new(Self {
            table: ArcSwap::from_pointee(RoutingTable::unknown(&[])),
            generation: watch::Sender::new(0),
            slots: nodes.into_iter().map(NodeSlot::new).collect(),
            stats: TopologyStats::default(),
            last_primary: AtomicUsize::new(usize::MAX),
            live: ArcSwapOption::empty(),
            reconfigured: Notify::new(),
            reconfiguring: Mutex::new(()),
            urgent: watch::Sender::new(0),
        });
        topology.table.store(Arc::new(topology.unprobed_table()));
        topology
    }

    /// The current table: a lock-free load, for every routing decision.
    pub fn load(&self) -> arc_swap::Guard<Arc<RoutingTable>> {
        self.table.load()
    }

    /// The current table, kept (for callers that hold it across awaits).
    pub fn snapshot(&self) -> Arc<RoutingTable> {
        self.table.load_full()
    }

    /// Every node slot so far, removed ones included (indexes are slots).
    pub fn nodes(&self) -> Arc<Vec<Arc<NodeSlot>>> {
        self.slots.snapshot()
    }

    /// The node in slot `index`.
    pub fn node(&self, index: usize) -> Option<Arc<NodeSlot>> {
        self.slots.get(index)
    }

    /// Slots handed out so far (removed nodes included).
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// The slot of the configured node named `name`.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.slots
            .snapshot()
            .iter()
            .position(|s| !s.is_removed() && s.target.name == name)
    }

    /// Asks every node's probe to run now instead of at its next interval: something a session
    /// or a probe saw suggests the roles changed (a server shutting down, a write refused as
    /// read-only, a standby reporting its promotion, a primary connection that is in recovery).
    /// Each node is probed at most once per 100 ms. Never blocks a session for
    /// long: one short write lock on a value nobody holds across an await.
    pub fn probe_now(&self, why: &'static str) {
        metrics::counter!("pgrouter_health_checks_triggered_total", "reason" => why).increment(1);
        tracing::debug!(reason = why, "probing every node now");
        self.urgent.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes a node's read weight; applied at the next probe.
    pub fn set_weight(&self, node: usize, weight: u32) {
        self.slots
            .with(node, |s| s.weight.store(weight, Ordering::Relaxed));
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
        self.slots
            .with(node, |s| s.disabled.store(disabled, Ordering::Relaxed));
    }

    /// Makes the watched nodes those of `targets` (a reload): a node whose name and address are
    /// unchanged keeps its slot, health and weight updates; a new or re-addressed node gets a new
    /// slot, starts unchecked and serves once its probes say so; a node no longer listed is
    /// marked removed at once (no longer routed to) and its probes stop.
    pub fn reconfigure(&self, targets: &[NodeTarget]) -> NodeChanges {
        let _one_at_a_time = self
            .reconfiguring
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = self.slots.snapshot();
        let mut changes = NodeChanges {
            slots: Vec::with_capacity(targets.len()),
            added: Vec::new(),
            removed: Vec::new(),
        };
        for target in targets {
            let index = match current.iter().position(|s| !s.is_removed() && s.is(target)) {
                Some(i) => {
                    self.set_weight(i, target.weight);
                    // A discovered member now configured is configured from now on.
                    current[i].discovered.store(false, Ordering::Relaxed);
                    i
                }
                None => {
                    let i = self.slots.push(NodeSlot::new(target.clone()));
                    changes.added.push(i);
                    i
                }
            };
            changes.slots.push(index);
        }
        for (i, slot) in current.iter().enumerate() {
            // Members found through the HA manager are not in the file: they stay, unless the
            // file now names a node of theirs (re-addressed: it got a new slot above).
            let kept_as_discovered =
                slot.is_discovered() && !targets.iter().any(|t| t.name == slot.target.name);
            if !slot.is_removed() && !changes.slots.contains(&i) && !kept_as_discovered {
                slot.removed.store(true, Ordering::Relaxed);
                changes.removed.push(i);
            }
        }
        if !changes.added.is_empty() || !changes.removed.is_empty() {
            if self.live.load().is_some() {
                self.reconfigured.notify_one();
            } else {
                self.publish(self.unprobed_table());
            }
        }
        changes
    }

    /// Follows the HA manager's member list (`topology.discover_members`): members not known are
    /// added (probed, then routed to as their probes say), members added that way and no longer
    /// listed are removed. Returns whether anything changed.
    fn adopt_members(&self, listed: &[crate::observation::Member]) -> bool {
        let _one_at_a_time = self
            .reconfiguring
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = self.slots.snapshot();
        let known: Vec<crate::members::Known<'_>> = current
            .iter()
            .map(|s| crate::members::Known {
                name: &s.target.name,
                host: &s.target.host,
                port: s.target.port,
                patroni_url: s.target.patroni_url.as_deref(),
                discovered: s.is_discovered(),
                removed: s.is_removed(),
            })
            .collect();
        let changes = crate::members::compare(&known, listed);
        for m in &changes.add {
            tracing::info!(node = %m.name, host = %m.host, port = m.port,
                "the HA manager lists a member that is not configured: probing it (topology.discover_members)");
            let slot = NodeSlot::new(NodeTarget {
                name: m.name.clone(),
                host: m.host.clone(),
                port: m.port,
                weight: 1,
                patroni_url: m.patroni_url.clone(),
            });
            slot.discovered.store(true, Ordering::Relaxed);
            self.slots.push(slot);
        }
        for &i in &changes.remove {
            if let Some(slot) = current.get(i) {
                tracing::info!(node = %slot.target.name,
                    "the HA manager no longer lists this discovered member: removing it");
                slot.removed.store(true, Ordering::Relaxed);
            }
        }
        !changes.add.is_empty() || !changes.remove.is_empty()
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

    /// The table of a topology whose probes have not started: every node unchecked, removed ones
    /// marked.
    fn unprobed_table(&self) -> RoutingTable {
        let slots = self.slots.snapshot();
        let inputs: Vec<NodeInput<'_>> = slots
            .iter()
            .map(|s| NodeInput {
                name: &s.target.name,
                host: &s.target.host,
                port: s.target.port,
                weight: s.weight(),
                health: crate::health::HealthState::Unknown,
                observation: None,
                last_error: None,
                disabled: s.is_disabled(),
                removed: s.is_removed(),
            })
            .collect();
        let policy = Policy {
            discovery: Discovery::Sql,
            max_lag_bytes: 0,
            max_lag_seconds: None,
        };
        let mut table = decide(&inputs, &policy, 0);
        table.no_primary_reason = Some("no health check has completed yet".into());
        table
    }

    /// Publishes a table built elsewhere (tests, and the aggregator).
    fn publish(&self, mut table: RoutingTable) {
        let before = self.table.load();
        let reshaped = !table.same_shape(&before);
        table.generation = before.generation + u64::from(reshaped);
        let now = crate::table::unix_now();
        for (i, row) in table.nodes.iter_mut().enumerate() {
            row.last_change = match before.nodes.get(i) {
                Some(old) if row.role == old.role && row.state == old.state => old.last_change,
                _ => now,
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

    /// Starts one health task per node and the aggregator; they stop with `shutdown`. Nodes a
    /// reload adds get their own task; those it removes lose theirs.
    pub fn start(
        self: &Arc<Self>,
        settings: MonitorSettings,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let initial = Arc::new(settings.clone());
        self.live.store(Some(Arc::clone(&initial)));
        let (results, mut incoming) = mpsc::channel::<ProbeResult>(PROBE_QUEUE);
        let topology = Arc::clone(self);
        tokio::spawn(async move {
            let mut probes = Probes {
                tasks: JoinSet::new(),
                stops: Vec::new(),
                results,
                shutdown: shutdown.clone(),
            };
            let mut view = Aggregate::default();
            // The first table waits for every node's first probe (each is bounded by the probe
            // timeout). Otherwise the node that answers first could be elected primary while the
            // one that proves it a false primary (a replica on a newer timeline) has not answered
            // yet: an old primary restarted without rewind would take writes.
            let mut unprobed = vec![true; topology.slots.snapshot().len()];
            probes.follow(&topology, &settings);
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = topology.reconfigured.notified() => {
                        let current = topology.live.load_full().unwrap_or_else(|| Arc::clone(&initial));
                        probes.follow(&topology, &current);
                        None
                    }
                    next = incoming.recv() => match next {
                        Some(next) => Some(next),
                        None => break,
                    },
                };
                let settings = topology
                    .live
                    .load_full()
                    .unwrap_or_else(|| Arc::clone(&initial));
                let slots = topology.slots.snapshot();
                view.grow_to(slots.len());
                if let Some(ProbeResult {
                    index,
                    outcome,
                    early,
                }) = next
                {
                    if let Some(first) = unprobed.get_mut(index) {
                        *first = false;
                    }
                    view.record(index, outcome, early, &settings, &slots);
                }
                if settings.discover_members {
                    let latest: Vec<Option<&Observation>> =
                        view.latest.iter().map(Option::as_ref).collect();
                    let listed = crate::members::listed(settings.discovery, &latest);
                    if listed.is_some_and(|l| topology.adopt_members(&l)) {
                        probes.follow(&topology, &settings);
                        continue;
                    }
                }
                let waiting = unprobed
                    .iter()
                    .enumerate()
                    .any(|(i, first)| *first && slots.get(i).is_some_and(|s| !s.is_removed()));
                if waiting {
                    continue;
                }
                let inputs: Vec<NodeInput<'_>> = slots
                    .iter()
                    .enumerate()
                    .map(|(i, slot)| NodeInput {
                        name: &slot.target.name,
                        host: &slot.target.host,
                        port: slot.target.port,
                        weight: slot.weight(),
                        health: view.health[i].state(),
                        observation: view.latest[i].as_ref(),
                        last_error: view.errors[i].as_deref(),
                        disabled: slot.is_disabled(),
                        removed: slot.is_removed(),
                    })
                    .collect();
                topology.publish(decide(&inputs, &settings.policy, view.max_timeline));
            }
            probes.tasks.shutdown().await;
        })
    }
}

/// Probe results waiting for the aggregator; probes wait when it is full.
const PROBE_QUEUE: usize = 64;

/// The shortest time between two probes of one node when probes are asked for early
/// ([`Topology::probe_now`]): sessions that all see the same failure make one probe, not one each.
pub(crate) const URGENT_PROBE_GAP: Duration = Duration::from_millis(100);

/// A slot's probe outcome.
struct ProbeResult {
    index: usize,
    outcome: Result<Observation, String>,
    /// Asked for early ([`Topology::probe_now`]) rather than at the interval.
    early: bool,
}

/// The aggregator's memory of each slot's probes.
#[derive(Default)]
struct Aggregate {
    health: Vec<Health>,
    latest: Vec<Option<Observation>>,
    errors: Vec<Option<String>>,
    max_timeline: u32,
    /// The newest repmgr event logged so far (by timestamp text, which sorts as time).
    repmgr_event: Option<crate::observation::RepmgrEvent>,
}

impl Aggregate {
    fn grow_to(&mut self, slots: usize) {
        self.health
            .resize(slots.max(self.health.len()), Health::default());
        self.latest.resize(slots.max(self.latest.len()), None);
        self.errors.resize(slots.max(self.errors.len()), None);
    }

    /// Records a probe. A failed probe that was asked for early does not count towards
    /// `max_failures`: a blip that many sessions notice at once must not take a node down faster
    /// than the configured interval x failures would. What early probes see when they succeed
    /// (a promotion, a node in recovery) counts at once.
    fn record(
        &mut self,
        index: usize,
        outcome: Result<Observation, String>,
        early: bool,
        settings: &MonitorSettings,
        slots: &[Arc<NodeSlot>],
    ) {
        if index >= self.health.len() {
            return;
        }
        let ok = outcome.is_ok();
        if ok || !early {
            self.health[index].record(ok, settings.max_failures, settings.min_successes);
        }
        match outcome {
            Ok(mut obs) => {
                // A replica of an idle primary briefly has received but unreplayed WAL (a
                // checkpoint record) while its last replayed transaction is old: one probe alone
                // would call that lag. Real lag shows in two in a row.
                if let (Some(now), Some(before)) = (
                    obs.replay_delay,
                    self.latest[index].as_ref().and_then(|o| o.replay_delay),
                ) {
                    obs.replay_delay = Some(now.min(before));
                }
                if let Some(tl) = obs
                    .timeline
                    .or(obs.manager.as_ref().and_then(|m| m.timeline))
                {
                    self.max_timeline = self.max_timeline.max(tl);
                }
                if let Some(event) = obs
                    .repmgr_event
                    .as_ref()
                    .filter(|e| self.repmgr_event.as_ref().is_none_or(|seen| e.at > seen.at))
                {
                    // The first one is what happened before pgrouter started: debug only.
                    if self.repmgr_event.is_some() {
                        tracing::info!(node_id = event.node_id, event = %event.event,
                            successful = event.successful, at = %event.at, details = %event.details,
                            "repmgr event");
                    }
                    self.repmgr_event = Some(event.clone());
                }
                self.latest[index] = Some(obs);
                self.errors[index] = None;
            }
            Err(e) => {
                if self.errors[index].as_deref() != Some(e.as_str()) {
                    let name = slots.get(index).map_or("?", |s| s.target.name.as_str());
                    tracing::debug!(node = %name, error = %e, "health check failed");
                }
                self.errors[index] = Some(e);
            }
        }
    }
}

/// The running probe tasks, one per slot that is not removed.
struct Probes {
    tasks: JoinSet<()>,
    /// Per slot: how to stop its task (`None`: never started or already stopped).
    stops: Vec<Option<CancellationToken>>,
    results: mpsc::Sender<ProbeResult>,
    shutdown: CancellationToken,
}

impl Probes {
    /// Starts a task for each new slot and stops those of removed slots.
    fn follow(&mut self, topology: &Arc<Topology>, settings: &MonitorSettings) {
        let slots = topology.slots.snapshot();
        while self.stops.len() < slots.len() {
            let index = self.stops.len();
            let slot = &slots[index];
            let stop = (!slot.is_removed()).then(|| self.shutdown.child_token());
            if let Some(stop) = &stop {
                self.spawn(topology, index, Arc::clone(slot), settings, stop.clone());
            }
            self.stops.push(stop);
        }
        for (stop, slot) in self.stops.iter_mut().zip(slots.iter()) {
            if slot.is_removed() {
                if let Some(stop) = stop.take() {
                    stop.cancel();
                }
            }
        }
    }

    fn spawn(
        &mut self,
        topology: &Arc<Topology>,
        index: usize,
        slot: Arc<NodeSlot>,
        settings: &MonitorSettings,
        stop: CancellationToken,
    ) {
        let node = &slot.target;
        let mut probe = NodeProbe::new(
            SqlProbe::new(probe_login(node, settings)),
            settings.discovery,
            settings.discover_members,
            node.patroni_url.clone(),
            Arc::clone(&settings.patroni_api),
            settings.timeout,
        );
        let results = self.results.clone();
        let duration = metrics::histogram!("pgrouter_health_check_duration_seconds", "node" => node.name.clone());
        let topology = Arc::clone(topology);
        let (mut login, mut timeout, mut server_tls, mut patroni_api) = (
            settings.login.clone(),
            settings.timeout,
            Arc::clone(&settings.server_tls),
            Arc::clone(&settings.patroni_api),
        );
        let mut urgent = topology.urgent.subscribe();
        self.tasks.spawn(async move {
            let mut next = tokio::time::Instant::now();
            let mut last_started: Option<tokio::time::Instant> = None;
            loop {
                // A probe asked for early leaves the schedule as it is.
                let scheduled = tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep_until(next) => true,
                    Ok(()) = urgent.changed() => {
                        urgent.borrow_and_update();
                        if let Some(earliest) = last_started.map(|t| t + URGENT_PROBE_GAP) {
                            tokio::select! {
                                _ = stop.cancelled() => return,
                                _ = tokio::time::sleep_until(earliest) => {}
                            }
                        }
                        false
                    }
                    pushed = probe.pushed() => {
                        match &pushed {
                            Pushed::HotStandby(value) => tracing::info!(node = %slot.target.name,
                                in_hot_standby = %value, "a node reported a change of recovery state; probing every node now"),
                            Pushed::Closed => tracing::info!(node = %slot.target.name,
                                "a node closed its health-check connection; probing every node now"),
                        }
                        topology.probe_now(match pushed {
                            Pushed::HotStandby(_) => "in_hot_standby",
                            Pushed::Closed => "health_check_connection_closed",
                        });
                        continue;
                    }
                };
                last_started = Some(tokio::time::Instant::now());
                let current = topology.live.load_full();
                let interval = current
                    .as_ref()
                    .map_or(Duration::from_secs(1), |s| s.interval);
                if let Some(s) = current.filter(|s| {
                    (&s.login, s.timeout, &s.server_tls, &s.patroni_api)
                        != (&login, timeout, &server_tls, &patroni_api)
                }) {
                    // A reload changed the probes' login, timeout, TLS or API credentials.
                    (login, timeout, server_tls, patroni_api) = (
                        s.login.clone(),
                        s.timeout,
                        Arc::clone(&s.server_tls),
                        Arc::clone(&s.patroni_api),
                    );
                    probe.update(
                        probe_login(&slot.target, &s),
                        Arc::clone(&patroni_api),
                        timeout,
                    );
                }
                if scheduled {
                    next = (next + interval).max(tokio::time::Instant::now());
                }
                let started = std::time::Instant::now();
                let outcome = tokio::select! {
                    _ = stop.cancelled() => return,
                    outcome = probe.probe() => outcome,
                };
                let took = started.elapsed();
                duration.record(took.as_secs_f64());
                slot.checks.fetch_add(1, Ordering::Relaxed);
                if outcome.is_err() {
                    slot.check_failures.fetch_add(1, Ordering::Relaxed);
                }
                slot.check_times
                    .record(crate::table::unix_now(), took, outcome.is_ok());
                let result = ProbeResult {
                    index,
                    outcome,
                    early: !scheduled,
                };
                if results.send(result).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// The probes' login for a node.
fn probe_login(node: &NodeTarget, settings: &MonitorSettings) -> ProbeLogin {
    ProbeLogin {
        host: node.host.clone(),
        port: node.port,
        user: settings.login.user.clone(),
        password: settings.login.password.clone(),
        database: settings.login.database.clone(),
        timeout: settings.timeout,
        tls: Arc::clone(&settings.server_tls),
        keepalive: settings.keepalive,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::NodeState;

    fn target(name: &str, port: u16) -> NodeTarget {
        NodeTarget {
            name: name.into(),
            host: "127.0.0.1".into(),
            port,
            weight: 1,
            patroni_url: None,
        }
    }

    #[test]
    fn early_probe_failures_do_not_count_towards_max_failures() {
        let settings = MonitorSettings {
            discovery: Discovery::Sql,
            discover_members: false,
            server_tls: Arc::new(pgrouter_conn::ServerTls::disabled(false)),
            patroni_api: Arc::default(),
            keepalive: None,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            max_failures: 3,
            min_successes: 2,
            login: HealthCheckLogin {
                user: "u".into(),
                password: "p".into(),
                database: "d".into(),
            },
            policy: Policy {
                discovery: Discovery::Sql,
                max_lag_bytes: 0,
                max_lag_seconds: None,
            },
        };
        let slots = vec![Arc::new(NodeSlot::new(target("a", 1)))];
        let mut view = Aggregate::default();
        view.grow_to(1);
        let failed = || Err::<Observation, String>("refused".into());
        view.record(0, Ok(Observation::default()), false, &settings, &slots);
        use crate::health::HealthState::{Down, Up};
        // Many sessions see one blip and each asks for a probe: the node stays up.
        for _ in 0..10 {
            view.record(0, failed(), true, &settings, &slots);
        }
        assert_eq!(view.health[0].state(), Up);
        assert_eq!(view.errors[0].as_deref(), Some("refused"));
        // Failures at the interval take it down as configured.
        for _ in 0..3 {
            view.record(0, failed(), false, &settings, &slots);
        }
        assert_eq!(view.health[0].state(), Down);
        // Early successes count: a node back in service returns without waiting intervals.
        view.record(0, Ok(Observation::default()), true, &settings, &slots);
        view.record(0, Ok(Observation::default()), true, &settings, &slots);
        assert_eq!(view.health[0].state(), Up);
        assert_eq!(view.errors[0], None);
    }

    #[test]
    fn reconfigure_keeps_slots_of_unchanged_nodes_and_never_reuses_one() {
        let topology = Topology::new(vec![target("a", 1), target("b", 2), target("c", 3)]);
        // b re-addressed, c removed, d added, order changed, a's weight changed.
        let mut a = target("a", 1);
        a.weight = 7;
        let changes = topology.reconfigure(&[target("d", 4), target("b", 20), a]);
        assert_eq!(changes.slots, vec![3, 4, 0]);
        assert_eq!(changes.added, vec![3, 4]);
        assert_eq!(changes.removed, vec![1, 2]);
        assert_eq!(topology.node(0).map(|s| s.weight()), Some(7));
        assert_eq!(topology.find("b"), Some(4));
        assert_eq!(topology.find("c"), None);
        let table = topology.load();
        let states: Vec<NodeState> = table.nodes.iter().map(|n| n.state).collect();
        use NodeState::{Down, Removed};
        assert_eq!(states, vec![Down, Removed, Removed, Down, Down]);
        assert_eq!(table.nodes[4].port, 20);
        assert_eq!(
            table.configured().map(|(i, _)| i).collect::<Vec<_>>(),
            vec![0, 3, 4]
        );
        // The same list again changes nothing.
        let again = topology.reconfigure(&[target("d", 4), target("b", 20), target("a", 1)]);
        assert!(again.added.is_empty() && again.removed.is_empty());
        assert_eq!(topology.slot_count(), 5);
    }
}
