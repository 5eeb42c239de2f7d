//! Who is primary, which replicas may serve reads, and why: pgrouter's view of the cluster.
//!
//! One health task per node probes it every `health_check.interval` (SQL, plus the node's Patroni
//! REST API or repmgr's metadata, as `topology.discovery` says). An aggregator turns the probes
//! into an immutable [`RoutingTable`] and publishes it with `arc-swap`: sessions load it per
//! routing decision, without a lock, and wait on [`Topology::changed`] when they need a primary
//! that is not there yet.
//!
//! # Layout
//! - [`observation`]: what one probe saw.
//! - [`health`]: consecutive failures/successes → up or down (hysteresis).
//! - [`decide`]: the pure function from observations to a routing table; every rule of primary
//!   election, false-primary and lag exclusion is table-tested there.
//! - [`table`]: the routing table and how its changes are described in the log.
//! - [`members`]: `topology.discover_members`: members the HA manager lists that are not
//!   configured.
//! - `probe`: the SQL, Patroni and repmgr probes (real network I/O).
//! - `monitor`: the tasks, and the [`Topology`] handle sessions hold.
//!
//! # What this crate must not do
//! It never changes the cluster: no promotion, no fencing, no writes. It follows the HA manager.
//! It holds no lock that a session could wait on.

pub mod decide;
pub mod health;
mod http;
pub use http::HttpClient;
pub mod members;
mod monitor;
pub mod observation;
mod probe;
pub mod table;

pub use decide::{decide, NodeInput, Policy};
pub use monitor::{
    CheckTimes, MonitorSettings, NodeChanges, NodeSlot, NodeTarget, Topology, TopologyStats,
};
pub use observation::{ManagerRole, ManagerView, Member, Observation, RepmgrEvent, RepmgrRow};
pub use table::{NodeState, NodeStatus, Role, RoutingTable};
