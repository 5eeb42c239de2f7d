//! Cutting the client's byte stream into routable units, and reading the few message bodies
//! routing needs.

use super::client::frame_error;
use super::state::SessionState;
use super::SessionError;
use crate::context::{Live, ProxyContext};
use bytes::BytesMut;
use pgrouter_protocol::frame;
use pgrouter_protocol::frontend as fe;
use pgrouter_protocol::{ErrorResponse, SqlState};
use pgrouter_sql::{Classification, Route};
use std::sync::Arc;

/// A request found at a transaction boundary.
pub(super) struct Unit {
    /// Bytes at the front of the client buffer.
    pub(super) len: usize,
    /// Terminate.
    pub(super) terminate: bool,
}

pub(super) fn protocol_violation(message: String) -> SessionError {
    ErrorResponse::fatal(SqlState::PROTOCOL_VIOLATION, message).into()
}

/// Finds the next unit at the front of `buf`: a `Query`, a `FunctionCall`, or extended-protocol
/// messages through `Sync` (or through a trailing `Flush`). `Ok(None)` means more bytes are needed.
pub(super) fn next_unit(buf: &mut BytesMut, max_len: usize) -> Result<Option<Unit>, SessionError> {
    let mut pos = 0;
    loop {
        let Some(f) = frame::next_frame(&buf[pos..], max_len).map_err(frame_error)? else {
            // A message whose header has arrived is not reserved whole: the buffer grows as its
            // bytes arrive (doubling), so memory follows what a client sent, not what it
            // announced (a header claiming 64 MB costs nothing until 64 MB come).
            // A very long pipeline without Sync: route what is there rather than buffer forever.
            if pos > max_len {
                return Ok(Some(Unit {
                    len: pos,
                    terminate: false,
                }));
            }
            return Ok(None);
        };
        if !fe::is_session_message(f.tag) {
            return Err(protocol_violation(format!(
                "invalid frontend message type {}",
                f.tag
            )));
        }
        let starts_alone = matches!(f.tag, fe::QUERY | fe::FUNCTION_CALL | fe::TERMINATE);
        if starts_alone && pos > 0 {
            return Ok(Some(Unit {
                len: pos,
                terminate: false,
            }));
        }
        pos += f.total_len;
        match f.tag {
            fe::TERMINATE => {
                return Ok(Some(Unit {
                    len: pos,
                    terminate: true,
                }))
            }
            fe::QUERY
            | fe::FUNCTION_CALL
            | fe::SYNC
            | fe::COPY_DATA
            | fe::COPY_DONE
            | fe::COPY_FAIL => {
                return Ok(Some(Unit {
                    len: pos,
                    terminate: false,
                }))
            }
            fe::FLUSH
                if frame::next_frame(&buf[pos..], max_len)
                    .ok()
                    .flatten()
                    .is_none() =>
            {
                return Ok(Some(Unit {
                    len: pos,
                    terminate: false,
                }))
            }
            _ => {}
        }
    }
}

/// The route of one statement once session knowledge is added: SQL `EXECUTE` routes like the
/// prepared statement; unfamiliar functions route by their volatility in `pg_proc`.
pub(super) fn effective_route(
    ctx: &ProxyContext,
    state: &SessionState,
    c: &Classification,
) -> Route {
    if let Some(name) = &c.effects.executes {
        return state
            .sql_prepared
            .get(name)
            .copied()
            .unwrap_or(Route::Primary);
    }
    if c.route == Route::Read && !c.check_functions.is_empty() {
        // A replica only when pg_proc says none of them is VOLATILE (not looked up yet, or
        // missing: the primary is always correct).
        return match ctx.any_volatile(&c.check_functions) {
            Some(false) => Route::Read,
            _ => Route::Primary,
        };
    }
    c.route
}

/// Iterates over the complete frames of `bytes` as (tag, whole message).
pub(super) fn frames(bytes: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        let f = frame::next_frame(&bytes[pos..], usize::MAX)
            .ok()
            .flatten()?;
        let msg = &bytes[pos..pos + f.total_len];
        pos += f.total_len;
        Some((f.tag, msg))
    })
}

/// A message's body (empty for a message shorter than a header: a statement that streamed
/// through is stored with an empty `Parse`).
pub(super) fn body(msg: &[u8]) -> &[u8] {
    msg.get(frame::HEADER_LEN..).unwrap_or_default()
}

/// Where the complete messages at the front of `buf` end, and the tag and whole length of the
/// message after them once its header has arrived.
pub(super) fn complete_prefix(
    buf: &[u8],
    max_len: usize,
) -> Result<(usize, Option<(u8, usize)>), SessionError> {
    let mut pos = 0;
    while let Some(f) = frame::next_frame(&buf[pos..], max_len).map_err(frame_error)? {
        pos += f.total_len;
    }
    let next = frame::parse_header(&buf[pos..], max_len)
        .map_err(frame_error)?
        .map(|(tag, len)| (tag, len + 1));
    Ok((pos, next))
}

pub(super) fn utf8(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap_or("")
}

/// A statement or portal name as a map key. Names are C strings in the client's encoding; one
/// that is not UTF-8 gets a key no UTF-8 name can have (a leading NUL, then its bytes in hex),
/// so two different names never share a key and none collides with the unnamed statement.
pub(super) fn name_key(b: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(b) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => std::borrow::Cow::Owned(
            std::iter::once("\0".to_owned())
                .chain(b.iter().map(|x| format!("{x:02x}")))
                .collect(),
        ),
    }
}

/// Classifies statement text as the client sent it. Text that is not valid UTF-8 (a client
/// encoding such as LATIN1 with non-ASCII characters) cannot be parsed safely: it is unknown,
/// so it goes to the primary, is never held for a re-run, and counts as changing the session.
pub(super) fn classify_text(ctx: &ProxyContext, live: &Live, text: &[u8]) -> Arc<Classification> {
    match std::str::from_utf8(text) {
        Ok(sql) => ctx.classify_under(live, sql),
        Err(_) => {
            let mut c = Classification::new(Route::Primary, pgrouter_sql::Rule::Unparsable);
            c.effects.untracked = true;
            Arc::new(c)
        }
    }
}

/// Whether running `c` leaves nothing of the client's on a server connection beyond what the
/// session tracks itself (its replay log, its prepared statements, its pins). A pooled
/// connection that ran anything else is reset before another client gets it.
pub(super) fn leaves_session_clean(ctx: &ProxyContext, c: &Classification) -> bool {
    use pgrouter_sql::Rule;
    let rule_clean = !matches!(
        c.rule,
        Rule::Unparsable | Rule::ExecutePrepared | Rule::FunctionNotReadOnly
    );
    rule_clean
        && !c.effects.untracked
        && c.effects.executes.is_none()
        && c.effects.pin.is_none()
        // A user function in a read: trusted when pg_proc says it is not VOLATILE.
        && (c.check_functions.is_empty() || ctx.any_volatile(&c.check_functions) == Some(false))
}

/// The classification of a statement for one `Bind` of it: a `set_config` argument bound at run
/// time is read from the `Bind` (`parse`: the statement's `Parse` body, for the declared
/// parameter types) and becomes a change to replay like a literal one. A value pgrouter cannot
/// read as text (NULL, not UTF-8, binary format of a non-text type) pins the session instead.
pub(super) fn bound_classification(
    c: &Arc<Classification>,
    bind: &[u8],
    parse: &[u8],
) -> Arc<Classification> {
    use pgrouter_sql::{ConfigArg, PinReason, SessionChange};
    if !c
        .effects
        .session
        .iter()
        .any(|s| matches!(s, SessionChange::SetConfigBound { .. }))
    {
        return Arc::clone(c);
    }
    let text = |arg: &ConfigArg| -> Option<String> {
        let index = match arg {
            ConfigArg::Text(s) => return Some(s.clone()),
            ConfigArg::Param(i) => *i,
        };
        let bound = fe::bind_parameter(bind, index)?;
        // Binary format is the text itself only for text-like types (text, varchar, bpchar,
        // name, unknown), or when the client declared no type (the server infers text).
        if bound.binary
            && !matches!(
                fe::parse_parameter_type(parse, index)?,
                0 | 25 | 1043 | 1042 | 19 | 705
            )
        {
            return None;
        }
        std::str::from_utf8(bound.value?).ok().map(str::to_owned)
    };
    let mut resolved = (**c).clone();
    resolved.effects.session.clear();
    for change in &c.effects.session {
        match change {
            SessionChange::SetConfigBound { name, value } => match (text(name), text(value)) {
                (Some(name), Some(value)) => resolved.effects.session.push(SessionChange::Replay(
                    pgrouter_sql::set_config_replay(&name, &value),
                )),
                _ => {
                    resolved
                        .effects
                        .pin
                        .get_or_insert(PinReason::SessionFunction);
                }
            },
            other => resolved.effects.session.push(other.clone()),
        }
    }
    Arc::new(resolved)
}

/// Whether running `c` may set the session's sequence state (`currval`, `lastval`): anything
/// that may write does (a `serial` default, a trigger, `nextval` itself), so everything bound for
/// the primary except transaction control counts. Reads cannot: `nextval` is refused in a
/// read-only transaction, and a read calling a volatile function is reset in full anyway.
pub(super) fn may_set_sequences(c: &Classification) -> bool {
    c.route == Route::Primary && c.rule != pgrouter_sql::Rule::TransactionControl
}

#[cfg(test)]
mod tests {
    use super::{bound_classification, may_set_sequences};
    use pgrouter_sql::{Classifier, PinReason, SessionChange};
    use std::sync::Arc;

    /// A `Parse` body declaring `types`, and a `Bind` body with one parameter.
    fn parse_and_bind(types: &[u32], binary: bool, value: Option<&[u8]>) -> (Vec<u8>, Vec<u8>) {
        let mut parse = b"s\0q\0".to_vec();
        parse.extend((types.len() as i16).to_be_bytes());
        for t in types {
            parse.extend(t.to_be_bytes());
        }
        let mut bind = b"\0s\0\0\x01".to_vec();
        bind.extend(i16::from(binary).to_be_bytes());
        bind.extend(1i16.to_be_bytes());
        match value {
            Some(v) => {
                bind.extend((v.len() as i32).to_be_bytes());
                bind.extend(v);
            }
            None => bind.extend((-1i32).to_be_bytes()),
        }
        bind.extend(0i16.to_be_bytes());
        (parse, bind)
    }

    #[test]
    fn set_config_values_are_read_from_the_bind() {
        let c = Arc::new(Classifier::default().classify("SELECT set_config('jit', $1, false)"));
        let replay = |v: &str| {
            Some(SessionChange::Replay(format!(
                "SELECT pg_catalog.set_config('jit', '{v}', false)"
            )))
        };
        #[rustfmt::skip]
        let cases: [(&[u32], bool, Option<&[u8]>, Option<SessionChange>); 7] = [
            (&[], false, Some(b"on"), replay("on")),
            (&[], true, Some(b"off"), replay("off")),
            (&[25], true, Some(b"o'n"), replay("o''n")),
            (&[1043], true, Some(b"on"), replay("on")),
            (&[23], true, Some(b"\0\0\0\x01"), None),
            (&[], false, None, None),
            (&[], false, Some(b"caf\xe9"), None),
        ];
        for (types, binary, value, want) in cases {
            let (parse, bind) = parse_and_bind(types, binary, value);
            let got = bound_classification(&c, &bind, &parse);
            assert_eq!(
                got.effects.session.first().cloned(),
                want,
                "{types:?} {value:?}"
            );
            let pinned = want.is_none().then_some(PinReason::SessionFunction);
            assert_eq!(got.effects.pin, pinned, "{types:?} {value:?}");
        }
        // A statement without bound settings is shared, not copied.
        let plain = Arc::new(Classifier::default().classify("SELECT 1"));
        let (parse, bind) = parse_and_bind(&[], false, Some(b"x"));
        assert!(Arc::ptr_eq(
            &plain,
            &bound_classification(&plain, &bind, &parse)
        ));
    }

    #[test]
    fn complete_prefix_finds_the_first_message_still_arriving() {
        use super::complete_prefix;
        let sync = [b'S', 0, 0, 0, 4];
        let mut two_and_a_half = sync.repeat(2);
        two_and_a_half.extend_from_slice(&[b'Q', 0, 0, 0x10, 0, b'S']);
        #[rustfmt::skip]
        let cases: [(&[u8], (usize, Option<(u8, usize)>)); 5] = [
            (&[], (0, None)),
            (&sync, (5, None)),
            (&sync[..3], (0, None)),
            (&two_and_a_half, (10, Some((b'Q', 0x1001)))),
            (&[b'd', 0, 0, 0, 9, 1], (0, Some((b'd', 10)))),
        ];
        for (buf, want) in cases {
            assert_eq!(complete_prefix(buf, 1 << 20).ok(), Some(want), "{buf:?}");
        }
        // A header past the limit is PostgreSQL's error, as for a complete message.
        assert!(complete_prefix(&[b'Q', 0x7f, 0, 0, 0], 1 << 20).is_err());
    }

    #[test]
    fn what_may_set_sequence_state() {
        let classifier = Classifier::default();
        for (sql, sets) in [
            ("INSERT INTO t(v) VALUES (1)", true),
            ("SELECT nextval('s')", true),
            ("SELECT setval('s', 5)", true),
            ("UPDATE t SET v = 2", true),
            ("CALL p()", true),
            ("SELECT v FROM t", false),
            ("SHOW work_mem", false),
            ("BEGIN", false),
            ("COMMIT", false),
            ("SET work_mem = '8MB'", false),
        ] {
            let c = classifier.classify(sql);
            assert_eq!(may_set_sequences(&c), sets, "{sql}: {:?}", c.route);
        }
    }
}
