//! Read-your-writes by LSN (`routing.read_your_writes: session`): once a session has written,
//! its reads go only to a replica that has replayed the write, else (after waiting up to
//! `routing.read_your_writes_wait`) to the primary.
//!
//! The write's position is learnt lazily, when a read follows it: `pg_current_wal_insert_lsn()`
//! on the primary, which is at or past the end of every transaction that has committed there.
//! A session that only writes, or only reads, pays nothing. A replica's replayed position comes
//! from the health checks (each second); a replica not there yet is asked directly
//! (`pg_last_wal_replay_lsn()`, every millisecond) until it is or the wait is over.
//!
//! Across sessions and instances: `SHOW pgrouter.last_write_lsn` gives the position as a token;
//! `SET pgrouter.min_lsn = '…'` (or the start-up parameter) makes a session's reads wait for it;
//! `SET pgrouter.max_staleness = '2s'` keeps a session's reads off replicas that have not
//! replayed what the primary had two seconds ago (its position is recorded once a second from
//! the health checks).

use super::backend::Slot;
use super::client::ClientConn;
use super::relay::Session;
use super::SessionError;
use pgrouter_config::ReadYourWrites;
use pgrouter_protocol::{ErrorResponse, SqlState};
use std::time::Duration;

/// A WAL position as PostgreSQL prints it (`16/B374D848`) in bytes.
pub(crate) fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.trim().split_once('/')?;
    let valid = |p: &str| !p.is_empty() && p.len() <= 8 && p.bytes().all(|b| b.is_ascii_hexdigit());
    if !valid(high) || !valid(low) {
        return None;
    }
    Some((u64::from_str_radix(high, 16).ok()? << 32) | u64::from_str_radix(low, 16).ok()?)
}

/// A WAL position as PostgreSQL prints it.
pub(crate) fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// One of pgrouter's own session commands, sent as a simple query.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Command {
    /// `SHOW pgrouter.last_write_lsn`.
    ShowLastWriteLsn,
    /// `SHOW pgrouter.min_lsn`.
    ShowMinLsn,
    /// `SHOW pgrouter.max_staleness`.
    ShowMaxStaleness,
    /// `SET pgrouter.min_lsn = '…'` (`RESET`: 0).
    SetMinLsn(u64),
    /// `SET pgrouter.max_staleness = '…'` (`RESET`, `off` or `0`: none).
    SetMaxStaleness(Option<Duration>),
}

/// A setting as given: the command, or PostgreSQL's error for a bad value.
pub(crate) type Setting = Result<Command, ErrorResponse>;

/// The setting names pgrouter answers for itself.
const MIN_LSN: &str = "pgrouter.min_lsn";
const MAX_STALENESS: &str = "pgrouter.max_staleness";
const LAST_WRITE_LSN: &str = "pgrouter.last_write_lsn";

/// PostgreSQL's error for a bad value of a setting.
fn invalid_value(name: &str, value: &str) -> ErrorResponse {
    ErrorResponse::error(
        SqlState::INVALID_PARAMETER_VALUE,
        format!("invalid value for parameter \"{name}\": \"{value}\""),
    )
}

/// The value of a `SET`/start-up setting for `name`, as a command.
pub(crate) fn setting(name: &str, value: &str) -> Option<Result<Command, ErrorResponse>> {
    let name = name.to_ascii_lowercase();
    let value = value.trim();
    if name == MIN_LSN {
        return Some(if value.is_empty() || value == "0" {
            Ok(Command::SetMinLsn(0))
        } else {
            parse_lsn(value)
                .map(Command::SetMinLsn)
                .ok_or_else(|| invalid_value(MIN_LSN, value))
        });
    }
    if name == MAX_STALENESS {
        return Some(if matches!(value, "" | "0" | "off" | "-1") {
            Ok(Command::SetMaxStaleness(None))
        } else {
            pgrouter_config::Duration::parse(value)
                .map(|d| Command::SetMaxStaleness(Some(d.get())))
                .map_err(|_| invalid_value(MAX_STALENESS, value))
        });
    }
    None
}

/// The command a simple query's text is, if it is exactly one of pgrouter's settings
/// (`SHOW name`, `SET [SESSION] name = value` or `TO value`, `RESET name`; any case, an
/// optional `;`). Refused at the first word for anything else, before reading the rest.
pub(crate) fn parse(text: &[u8]) -> Option<Result<Command, ErrorResponse>> {
    let text = text.strip_suffix(&[0]).unwrap_or(text);
    let first = crate::console::pgpool::begins_with_word(text, &["show", "set", "reset"])?;
    let text = std::str::from_utf8(&text[first..]).ok()?.trim_end();
    let text = text.strip_suffix(';').unwrap_or(text).trim_end();
    let (verb, rest) = text.split_once(char::is_whitespace)?;
    let rest = rest.trim_start();
    if verb.eq_ignore_ascii_case("show") {
        return match rest.to_ascii_lowercase().as_str() {
            LAST_WRITE_LSN => Some(Ok(Command::ShowLastWriteLsn)),
            MIN_LSN => Some(Ok(Command::ShowMinLsn)),
            MAX_STALENESS => Some(Ok(Command::ShowMaxStaleness)),
            _ => None,
        };
    }
    if verb.eq_ignore_ascii_case("reset") {
        return setting(rest, "");
    }
    if !verb.eq_ignore_ascii_case("set") {
        return None;
    }
    let rest = match rest.split_once(char::is_whitespace) {
        Some((scope, more)) if scope.eq_ignore_ascii_case("session") => more.trim_start(),
        _ => rest,
    };
    let name_end = rest
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(rest.len());
    let (name, value) = rest.split_at(name_end);
    if !name.to_ascii_lowercase().starts_with("pgrouter.") {
        return None;
    }
    let value = value.trim_start();
    let value = if let Some(v) = value.strip_prefix('=') {
        v
    } else if value.len() >= 2 && value[..2].eq_ignore_ascii_case("to") {
        &value[2..]
    } else {
        return None;
    };
    let value = value.trim();
    let value = value
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .unwrap_or(value);
    setting(name, value)
}

/// pgrouter's settings among start-up parameters: named directly (`pgrouter.min_lsn`), or as
/// `-c pgrouter.min_lsn=…` in `options`. Returns the commands and the parameters without them
/// (the servers never see them, and they do not split the pools).
pub(crate) fn startup_settings(
    params: Vec<(String, String)>,
) -> (Vec<Setting>, Vec<(String, String)>) {
    let mut commands = Vec::new();
    let mut kept = Vec::new();
    for (name, value) in params {
        if let Some(command) = setting(&name, &value) {
            commands.push(command);
            continue;
        }
        if name == "options" && value.contains("pgrouter.") {
            let mut rest = Vec::new();
            let mut words = value.split_whitespace().peekable();
            while let Some(word) = words.next() {
                let assignment = match word {
                    "-c" => words.next(),
                    w => w.strip_prefix("-c").or(w.strip_prefix("--")),
                };
                let found = assignment
                    .and_then(|a| a.split_once('='))
                    .and_then(|(n, v)| setting(n, v));
                match found {
                    Some(command) => commands.push(command),
                    None if word == "-c" => {
                        rest.push(word.to_owned());
                        rest.extend(assignment.map(str::to_owned));
                    }
                    None => rest.push(word.to_owned()),
                }
            }
            if !rest.is_empty() {
                kept.push((name, rest.join(" ")));
            }
            continue;
        }
        kept.push((name, value));
    }
    (commands, kept)
}

impl Session<'_> {
    /// Read-your-writes is on and this session has something to wait for: a write whose
    /// position is not known yet, a position given, or a staleness bound.
    pub(super) fn wants_read_check(&self) -> bool {
        let ryw = self.live.config.routing.read_your_writes == ReadYourWrites::Session;
        (ryw && self.state.write_unconfirmed)
            || self.state.min_lsn > 0
            || self.state.max_staleness.is_some()
    }

    /// Before a read goes to the session's replica: makes sure that replica has what the session
    /// must see (its writes, `pgrouter.min_lsn`, `pgrouter.max_staleness`), waiting up to
    /// `routing.read_your_writes_wait`; otherwise the read runs on the primary
    /// (`reads_on_primary`). Nothing is in flight on the session's connections.
    pub(super) async fn settle_read(
        &mut self,
        client: &mut ClientConn,
    ) -> Result<(), SessionError> {
        let (ryw, wait) = {
            let routing = &self.live.config.routing;
            (
                routing.read_your_writes == ReadYourWrites::Session,
                routing.read_your_writes_wait.get(),
            )
        };
        if ryw && !self.learn_write_position(client).await? {
            self.reads_on_primary = true;
            return Ok(());
        }
        let Some(node) = self.read_node else {
            return Ok(());
        };
        let (is_primary, position) = {
            let table = self.ctx.topology.load();
            let row = table.nodes.get(node);
            (
                table.primary == Some(node),
                row.and_then(|r| r.wal_position),
            )
        };
        if is_primary {
            return Ok(());
        }
        // Staleness bound: the replica must have what the primary had that long ago.
        let stale_bound = self
            .state
            .max_staleness
            .and_then(|max| self.ctx.primary_position_before(max))
            .unwrap_or(0);
        let need = self.state.min_lsn.max(stale_bound);
        let confirmed = self
            .replica_confirmed
            .filter(|(n, _)| *n == node)
            .map(|(_, lsn)| lsn);
        if need == 0 || position.max(confirmed).is_some_and(|p| p >= need) {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let replayed = self.replay_lsn(client).await?;
            tracing::debug!(need = %format_lsn(need), replayed = ?replayed.map(format_lsn), "read-your-writes: asked the replica");
            match replayed {
                Some(lsn) if lsn >= need => {
                    self.replica_confirmed = Some((node, lsn));
                    return Ok(());
                }
                Some(_) => {}
                None => break,
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break;
            }
            tokio::time::sleep((deadline - now).min(Duration::from_millis(1))).await;
        }
        self.reads_on_primary = true;
        Ok(())
    }

    /// When the session wrote since it last asked, learns where its writes are on the primary
    /// (raising `min_lsn` and `last_write_lsn`). `false`: it wrote and the position could not be
    /// learnt.
    async fn learn_write_position(
        &mut self,
        client: &mut ClientConn,
    ) -> Result<bool, SessionError> {
        if !self.state.write_unconfirmed {
            return Ok(true);
        }
        let learnt = self.primary_lsn(client).await?;
        tracing::debug!(lsn = ?learnt.map(format_lsn), "read-your-writes: the session's writes are at");
        let Some(lsn) = learnt else {
            return Ok(false);
        };
        self.state.min_lsn = self.state.min_lsn.max(lsn);
        self.state.last_write_lsn = self.state.last_write_lsn.max(lsn);
        self.state.write_unconfirmed = false;
        Ok(true)
    }

    /// The primary's WAL insert position, asked on the session's primary connection (taken
    /// for the question in transaction pooling). `None`: it could not be asked.
    async fn primary_lsn(&mut self, client: &mut ClientConn) -> Result<Option<u64>, SessionError> {
        if self.state.tx_status != pgrouter_protocol::backend::TransactionStatus::Idle
            || self.deferred_begin.is_some()
        {
            return Ok(None);
        }
        let slot = match self.ensure(Slot::Primary).await {
            Ok(slot) => slot,
            Err(SessionError::Unavailable(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(b) = self.backend(slot).filter(|b| !b.busy()) else {
            return Ok(None);
        };
        let rows = b
            .query_rows(client, "SELECT pg_catalog.pg_current_wal_insert_lsn()")
            .await?;
        self.release_if_idle(slot).await;
        Ok(first_lsn(&rows))
    }

    /// What the session's replica has replayed, asked on its read connection. `None`: it could
    /// not be asked.
    async fn replay_lsn(&mut self, client: &mut ClientConn) -> Result<Option<u64>, SessionError> {
        let slot = match self.ensure(Slot::Read).await {
            Ok(slot) => slot,
            Err(SessionError::Unavailable(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        if slot != Slot::Read {
            return Ok(None);
        }
        let Some(b) = self.backend(slot).filter(|b| !b.busy()) else {
            return Ok(None);
        };
        let rows = b
            .query_rows(client, "SELECT pg_catalog.pg_last_wal_replay_lsn()")
            .await?;
        Ok(first_lsn(&rows))
    }

    /// Applies one of pgrouter's settings to the session.
    pub(super) fn apply_setting(&mut self, command: &Command) {
        match command {
            // A position given raises what reads must see; `RESET` (0) forgets it (and the
            // session's own writes' position: it asked to read from anywhere again).
            Command::SetMinLsn(0) => self.state.min_lsn = 0,
            Command::SetMinLsn(lsn) => self.state.min_lsn = self.state.min_lsn.max(*lsn),
            Command::SetMaxStaleness(d) => self.state.max_staleness = *d,
            _ => {}
        }
    }

    /// Answers one of pgrouter's session commands (a lone simple query): its rows or `SET`,
    /// or PostgreSQL's error for a bad value. `SHOW pgrouter.last_write_lsn` first learns the
    /// position of writes not yet known (on the primary).
    pub(super) async fn answer_setting(
        &mut self,
        client: &mut ClientConn,
        command: Result<Command, ErrorResponse>,
    ) -> Result<(), SessionError> {
        use pgrouter_protocol::backend as be;
        let mut out = bytes::BytesMut::new();
        match command {
            Err(e) => {
                e.encode(&mut out);
                self.ctx.stats.error(e.code.code().as_bytes());
            }
            Ok(command) => {
                let show = |out: &mut bytes::BytesMut, name: &str, value: String| {
                    be::row_description_text(out, &[name]);
                    be::data_row_text(out, &[Some(&value)]);
                    be::command_complete(out, "SHOW");
                };
                match &command {
                    Command::ShowLastWriteLsn => {
                        // Not learnt (inside a transaction): the position last learnt.
                        self.learn_write_position(client).await?;
                        show(
                            &mut out,
                            "last_write_lsn",
                            format_lsn(self.state.last_write_lsn),
                        );
                    }
                    Command::ShowMinLsn => {
                        show(&mut out, "min_lsn", format_lsn(self.state.min_lsn));
                    }
                    Command::ShowMaxStaleness => {
                        let value = self.state.max_staleness.map_or_else(
                            || "off".to_owned(),
                            |d| {
                                pgrouter_config::Duration::from_millis(d.as_millis() as u64)
                                    .to_string()
                            },
                        );
                        show(&mut out, "max_staleness", value);
                    }
                    set => {
                        self.apply_setting(set);
                        be::command_complete(&mut out, "SET");
                    }
                }
            }
        }
        self.send_local_answer(client, out).await
    }
}

/// The first column of the first row, as an LSN.
fn first_lsn(rows: &[Vec<Option<String>>]) -> Option<u64> {
    parse_lsn(rows.first()?.first()?.as_deref()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lsns_read_and_print_as_postgresql_does() {
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        for bad in ["", "16", "/1", "1/", "g/1", "123456789/0", "1/2/3"] {
            assert_eq!(parse_lsn(bad), None, "{bad}");
        }
    }

    #[test]
    fn commands_are_recognised_exactly() {
        let ok = |t: &str| parse(t.as_bytes()).map(|r| r.ok());
        assert_eq!(
            ok("SHOW pgrouter.last_write_lsn"),
            Some(Some(Command::ShowLastWriteLsn))
        );
        assert_eq!(
            ok("show PGROUTER.MIN_LSN;"),
            Some(Some(Command::ShowMinLsn))
        );
        assert_eq!(
            ok("SET pgrouter.min_lsn = '16/B374D848'"),
            Some(Some(Command::SetMinLsn(0x16_B374_D848)))
        );
        assert_eq!(
            ok("set session pgrouter.min_lsn to '0/10'"),
            Some(Some(Command::SetMinLsn(16)))
        );
        assert_eq!(
            ok("SET pgrouter.max_staleness = '2s'"),
            Some(Some(Command::SetMaxStaleness(Some(Duration::from_secs(2)))))
        );
        assert_eq!(
            ok("SET pgrouter.max_staleness TO off"),
            Some(Some(Command::SetMaxStaleness(None)))
        );
        assert_eq!(
            ok("RESET pgrouter.min_lsn"),
            Some(Some(Command::SetMinLsn(0)))
        );
        assert_eq!(
            ok("SET pgrouter.min_lsn = 'nonsense'"),
            Some(None),
            "an error"
        );
        for other in [
            "SET search_path = x",
            "SHOW search_path",
            "SELECT 1",
            "SET pgrouter.other = 1",
            "SHOW pgrouter.min_lsn x",
            "",
        ] {
            assert!(parse(other.as_bytes()).is_none(), "{other}");
        }
    }

    #[test]
    fn startup_settings_are_taken_out_of_the_parameters() {
        let params = vec![
            ("application_name".to_owned(), "web".to_owned()),
            ("pgrouter.min_lsn".to_owned(), "0/20".to_owned()),
            (
                "options".to_owned(),
                "-c search_path=a -c pgrouter.max_staleness=2s".to_owned(),
            ),
        ];
        let (commands, kept) = startup_settings(params);
        let commands: Vec<Command> = commands.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            commands,
            [
                Command::SetMinLsn(32),
                Command::SetMaxStaleness(Some(Duration::from_secs(2)))
            ]
        );
        assert_eq!(
            kept,
            [
                ("application_name".to_owned(), "web".to_owned()),
                ("options".to_owned(), "-c search_path=a".to_owned())
            ]
        );
    }

    proptest! {
        #[test]
        fn any_text_parses_or_is_refused_without_panicking(text in "\\PC{0,64}") {
            let _ = parse(text.as_bytes());
            let _ = parse_lsn(&text);
        }
    }
}
