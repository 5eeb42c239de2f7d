//! The SQL probe: one persistent connection per node, one round trip per probe.

use crate::observation::{Observation, RepmgrRow};
use tokio_postgres::{Client, Config, NoTls, SimpleQueryMessage};

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

/// A node's SQL probe.
pub(crate) struct SqlProbe {
    config: Config,
    client: Option<Client>,
}

impl SqlProbe {
    pub(crate) fn new(config: Config) -> Self {
        Self {
            config,
            client: None,
        }
    }

    /// Drops the connection (after a failure or timeout): the next probe reconnects.
    pub(crate) fn reset(&mut self) {
        self.client = None;
    }

    pub(crate) async fn probe(&mut self, with_repmgr: bool) -> Result<Observation, String> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            let (client, connection) =
                self.config.connect(NoTls).await.map_err(|e| describe(&e))?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            self.client = Some(client);
        }
        let Some(client) = self.client.as_ref() else {
            return Err("not connected".into());
        };
        let status = rows(
            client
                .simple_query(STATUS_SQL)
                .await
                .map_err(|e| describe(&e))?,
        );
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
            let listed = rows(
                client
                    .simple_query(REPMGR_SQL)
                    .await
                    .map_err(|e| format!("reading repmgr.nodes: {}", describe(&e)))?,
            );
            obs.repmgr = Some(listed.iter().filter_map(|r| repmgr_row(r)).collect());
        }
        Ok(obs)
    }
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

fn rows(messages: Vec<SimpleQueryMessage>) -> Vec<Vec<Option<String>>> {
    messages
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_owned))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// The server's own message when there is one (e.g. "the database system is starting up").
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}
