//! The SQL probe: one persistent connection per node (pgrouter's own login, [`ServerConn`]), one
//! round trip per probe; between probes it listens on that connection for what the server sends
//! unasked: a shutdown (`57P01` and the connection closing), or `ParameterStatus in_hot_standby`.
//! (PostgreSQL 14+ reports a promotion to each session only before that session's next
//! `ReadyForQuery`, so an idle connection hears of it at its next query: busy session
//! connections are where promotions show first; see the proxy's server output.)

use crate::observation::{Observation, RepmgrEvent, RepmgrRow};
use bytes::BytesMut;
use pgrouter_conn::{ConnError, ServerConn, ServerTarget, ServerTls};
use pgrouter_protocol::backend as be;
use pgrouter_protocol::frame::{self, HEADER_LEN};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Recovery state, timeline and WAL position in one statement. The primary's timeline comes from
/// its current WAL file name (`pg_control_checkpoint()` keeps the old timeline until the first
/// checkpoint after a promotion); a standby's from its WAL receiver (visible with `pg_monitor`).
/// The replay delay is 0 while everything received has been replayed, so an idle primary does not
/// make its replicas look late.
const STATUS_SQL: &str = "SELECT pg_is_in_recovery(), \
  CASE WHEN pg_is_in_recovery() THEN (SELECT received_tli FROM pg_stat_wal_receiver) \
       ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END, \
  (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END \
     - '0/0'::pg_lsn)::bigint, \
  CASE WHEN NOT pg_is_in_recovery() THEN NULL \
       WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0 \
       ELSE COALESCE(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) END, \
  (SELECT status = 'streaming' FROM pg_stat_wal_receiver)";

const REPMGR_SQL: &str =
    "SELECT node_name, type, active, conninfo FROM repmgr.nodes ORDER BY node_id";

/// repmgr's latest event on this node's copy of its metadata.
const REPMGR_EVENT_SQL: &str = "SELECT node_id, event, successful, event_timestamp, \
  coalesce(details, '') FROM repmgr.events ORDER BY event_timestamp DESC LIMIT 1";

/// Largest message a probe connection accepts while idle (a notice, a parameter change).
const MAX_PUSHED: usize = 1 << 20;

/// Where and as whom the probe logs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProbeLogin {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) user: String,
    pub(crate) password: String,
    pub(crate) database: String,
    /// Limit for connect + login.
    pub(crate) timeout: Duration,
    /// `server_tls:`.
    pub(crate) tls: Arc<ServerTls>,
    /// `tcp_keepalive:`.
    pub(crate) keepalive: Option<pgrouter_conn::Keepalive>,
}

/// What a node's server said between probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// `in_hot_standby` changed (`off`: the node was promoted).
    HotStandby(String),
    /// The server ended the connection (shutdown, crash, terminated).
    Closed,
}

/// A node's SQL probe.
pub(crate) struct SqlProbe {
    login: ProbeLogin,
    conn: Option<ServerConn>,
    /// Bytes read from the connection and not yet consumed.
    buf: BytesMut,
}

impl SqlProbe {
    pub(crate) fn new(login: ProbeLogin) -> Self {
        Self {
            login,
            conn: None,
            buf: BytesMut::new(),
        }
    }

    /// Drops the connection (after a failure or timeout): the next probe reconnects.
    pub(crate) fn reset(&mut self) {
        self.conn = None;
        self.buf.clear();
    }

    pub(crate) async fn probe(&mut self, with_repmgr: bool) -> Result<Observation, String> {
        if self.conn.is_none() {
            let params = [
                ("database".to_owned(), self.login.database.clone()),
                (
                    "application_name".to_owned(),
                    "pgrouter health check".to_owned(),
                ),
            ];
            let target = ServerTarget {
                host: &self.login.host,
                port: self.login.port,
                user: &self.login.user,
                credential: pgrouter_conn::Credential::Password(&self.login.password),
                params: &params,
                timeout: self.login.timeout,
                tls: &self.login.tls,
                keepalive: self.login.keepalive,
            };
            let conn = ServerConn::connect(&target)
                .await
                .map_err(|e| describe(&e))?;
            self.buf.clear();
            self.conn = Some(conn);
        }
        let status = self.query(STATUS_SQL).await?;
        let row = status.first().ok_or("status query returned no row")?;
        let col = |i: usize| row.get(i).and_then(|v| v.as_deref());
        let mut obs = Observation {
            in_recovery: col(0) == Some("t"),
            timeline: col(1).and_then(|v| v.parse().ok()),
            wal_position: col(2).and_then(|v| v.parse().ok()),
            replay_delay: col(3).and_then(|v| v.parse().ok()),
            streaming: col(4).map(|v| v == "t"),
            ..Observation::default()
        };
        if with_repmgr {
            let listed = self
                .query(REPMGR_SQL)
                .await
                .map_err(|e| format!("reading repmgr.nodes: {e}"))?;
            obs.repmgr = Some(listed.iter().filter_map(|r| repmgr_row(r)).collect());
            // Only for operators (logged when it changes): a role that may not read the events
            // table still probes.
            obs.repmgr_event = self
                .query(REPMGR_EVENT_SQL)
                .await
                .ok()
                .and_then(|rows| rows.first().and_then(|r| repmgr_event(r)));
        }
        Ok(obs)
    }

    async fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        let conn = self.conn.as_mut().ok_or("not connected")?;
        let outcome = conn
            .simple_query(&mut self.buf, sql)
            .await
            .map_err(|e| e.to_string())?;
        match outcome.error {
            Some(e) => Err(e),
            None => Ok(outcome.rows),
        }
    }

    /// Waits, between probes, for the server to push something that may mean the node's role
    /// changed. Never ends while there is no connection. Cancel-safe: what was read stays in the
    /// buffer.
    pub(crate) async fn pushed(&mut self) -> Pushed {
        loop {
            if self.conn.is_none() {
                return std::future::pending().await;
            }
            while let Ok(Some(f)) = frame::next_frame(&self.buf, MAX_PUSHED) {
                let msg = self.buf.split_to(f.total_len);
                match f.tag {
                    be::PARAMETER_STATUS => {
                        let body = &msg[HEADER_LEN..];
                        let mut fields = body.split(|b| *b == 0);
                        if fields.next() == Some(b"in_hot_standby") {
                            let value = fields.next().unwrap_or_default();
                            return Pushed::HotStandby(String::from_utf8_lossy(value).into_owned());
                        }
                    }
                    be::ERROR_RESPONSE => {
                        // Idle, so only a FATAL one (the server is shutting down or terminated
                        // this backend): the connection is over.
                        self.reset();
                        return Pushed::Closed;
                    }
                    _ => {}
                }
            }
            if frame::next_frame(&self.buf, MAX_PUSHED).is_err() {
                self.reset();
                return Pushed::Closed;
            }
            self.buf.reserve(512);
            let Some(conn) = self.conn.as_mut() else {
                continue;
            };
            match conn.stream.read_buf(&mut self.buf).await {
                Ok(n) if n > 0 => {}
                _ => {
                    self.reset();
                    return Pushed::Closed;
                }
            }
        }
    }
}

fn repmgr_event(r: &[Option<String>]) -> Option<RepmgrEvent> {
    Some(RepmgrEvent {
        node_id: r.first()?.as_deref()?.parse().ok()?,
        event: r.get(1)?.clone()?,
        successful: r.get(2)?.as_deref() == Some("t"),
        at: r.get(3)?.clone().unwrap_or_default(),
        details: r.get(4)?.clone().unwrap_or_default(),
    })
}

fn repmgr_row(r: &[Option<String>]) -> Option<RepmgrRow> {
    let (host, port) = RepmgrRow::parse_conninfo(r.get(3)?.as_deref().unwrap_or(""));
    Some(RepmgrRow {
        name: r.first()?.clone()?,
        kind: r.get(1)?.clone()?,
        active: r.get(2)?.as_deref() == Some("t"),
        host,
        port,
    })
}

/// The server's own message when there is one (e.g. "57P03: the database system is starting
/// up").
fn describe(e: &ConnError) -> String {
    match e {
        ConnError::Refused { code, message, .. } => format!("{code}: {message}"),
        other => other.to_string(),
    }
}
