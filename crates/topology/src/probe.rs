//! Probing one node: SQL always (reachability, recovery state, timeline, WAL positions), plus the
//! HA manager's view where discovery asks for it.

mod patroni;
mod sql;

pub(crate) use sql::{ProbeLogin, Pushed, SqlProbe};

use crate::observation::Observation;
use pgrouter_config::Discovery;
use std::time::{Duration, Instant};

/// Probes one node, keeping its SQL connection between probes.
pub(crate) struct NodeProbe {
    sql: SqlProbe,
    discovery: Discovery,
    /// Also fetch Patroni's member list.
    discover_members: bool,
    patroni_url: Option<String>,
    /// TLS and credentials for Patroni's API.
    patroni: std::sync::Arc<crate::http::HttpClient>,
    timeout: Duration,
}

impl NodeProbe {
    pub(crate) fn new(
        sql: SqlProbe,
        discovery: Discovery,
        discover_members: bool,
        patroni_url: Option<String>,
        patroni: std::sync::Arc<crate::http::HttpClient>,
        timeout: Duration,
    ) -> Self {
        Self {
            sql,
            discovery,
            discover_members,
            patroni_url,
            patroni,
            timeout,
        }
    }

    /// Applies a reloaded login and timeout: the SQL connection is reopened with them.
    pub(crate) fn update(
        &mut self,
        login: ProbeLogin,
        patroni: std::sync::Arc<crate::http::HttpClient>,
        timeout: Duration,
    ) {
        self.sql = SqlProbe::new(login);
        self.patroni = patroni;
        self.timeout = timeout;
    }

    /// Waits for the node's server to push a sign that its role may have changed (see
    /// [`SqlProbe::pushed`]); never ends while the probe is not connected.
    pub(crate) async fn pushed(&mut self) -> Pushed {
        self.sql.pushed().await
    }

    /// One probe, bounded by the timeout as a whole. The error is a reason for operators.
    pub(crate) async fn probe(&mut self) -> Result<Observation, String> {
        let started = Instant::now();
        let result = tokio::time::timeout(self.timeout, self.probe_inner()).await;
        match result {
            Ok(Ok(mut obs)) => {
                obs.latency = started.elapsed();
                Ok(obs)
            }
            Ok(Err(e)) => {
                self.sql.reset();
                Err(e)
            }
            Err(_) => {
                self.sql.reset();
                Err(format!(
                    "health check timed out after {:.1}s",
                    self.timeout.as_secs_f64()
                ))
            }
        }
    }

    async fn probe_inner(&mut self) -> Result<Observation, String> {
        let with_repmgr = self.discovery == Discovery::Repmgr;
        let mut obs = self.sql.probe(with_repmgr).await?;
        if let (Discovery::Patroni, Some(url)) = (self.discovery, &self.patroni_url) {
            // A node whose Patroni does not answer is still reachable by SQL; the decision
            // treats a missing manager view as "not backed by Patroni".
            match patroni::fetch(&self.patroni, url).await {
                Ok(view) => obs.manager = Some(view),
                Err(e) => {
                    tracing::debug!(url = %url, error = %e, "Patroni REST API did not answer")
                }
            }
            if self.discover_members && obs.manager.is_some() {
                match patroni::fetch_members(&self.patroni, url).await {
                    Ok(members) => obs.members = Some(members),
                    Err(e) => {
                        tracing::debug!(url = %url, error = %e, "Patroni's member list could not be read")
                    }
                }
            }
        }
        Ok(obs)
    }
}
