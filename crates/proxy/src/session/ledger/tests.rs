//! The ledger against conversations: table cases from the drivers' message sequences, and a
//! property test over every request shape of the driver matrix.

use super::*;
use pgrouter_protocol::backend as be;

/// One step of a conversation on a server connection.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// A client message sent.
    Sent(u8),
    InjectedRequest,
    InjectedParse,
    InjectedClose,
    CloseIdleSegment(bool),
    /// A server message and what the ledger must say of it.
    Rfq(Ready),
    Error(bool, ErrorFor),
    ParseComplete(bool),
    CloseComplete(bool),
    Moved,
}
use Step::*;

const DONE: Ready = Ready::Client {
    done: true,
    failed: false,
};
const FAILED: Ready = Ready::Client {
    done: true,
    failed: true,
};
const MORE: Ready = Ready::Client {
    done: false,
    failed: false,
};

fn run(steps: &[Step]) -> Ledger {
    let mut l = Ledger::default();
    for (i, step) in steps.iter().enumerate() {
        match *step {
            Sent(tag) => l.sent(tag),
            InjectedRequest => l.injected_request(),
            InjectedParse => l.injected_parse(),
            InjectedClose => l.injected_close(),
            CloseIdleSegment(want) => assert_eq!(l.close_idle_segment(), want, "step {i}"),
            Rfq(want) => assert_eq!(l.ready_for_query(), want, "step {i}"),
            Error(fatal, want) => assert_eq!(l.error(fatal), want, "step {i}"),
            ParseComplete(hide) => assert_eq!(l.parse_complete(), hide, "step {i}"),
            CloseComplete(hide) => assert_eq!(l.close_complete(), hide, "step {i}"),
            Moved => l.request_moved_elsewhere(),
        }
    }
    l
}

/// Message sequences the drivers of the conformance matrix produce, and what pgrouter adds.
#[test]
fn conversations() {
    #[rustfmt::skip]
    let cases: &[(&str, &[Step], bool, bool)] = &[
        // (what, steps, busy afterwards, reusable afterwards)
        ("simple query", &[Sent(fe::QUERY), Rfq(DONE)], false, true),
        ("libpq PQexecParams: Parse Bind Describe Execute Sync",
            &[Sent(fe::PARSE), Sent(fe::BIND), Sent(fe::DESCRIBE), Sent(fe::EXECUTE), Sent(fe::SYNC),
              ParseComplete(false), Rfq(DONE)], false, true),
        ("pipeline: two segments, one Sync each",
            &[Sent(fe::BIND), Sent(fe::EXECUTE), Sent(fe::SYNC), Sent(fe::BIND), Sent(fe::EXECUTE), Sent(fe::SYNC),
              Rfq(MORE), Rfq(DONE)], false, true),
        ("replay before the request: swallowed through its ReadyForQuery",
            &[InjectedRequest, Sent(fe::QUERY), Rfq(Ready::Swallowed), Rfq(DONE)], false, true),
        ("a failing replay is the injected request's error, not the client's",
            &[InjectedRequest, Sent(fe::QUERY), Error(false, ErrorFor::Injected), Rfq(Ready::Swallowed), Rfq(DONE)],
            false, true),
        ("statement prepared invisibly on this connection",
            &[InjectedParse, Sent(fe::BIND), Sent(fe::EXECUTE), Sent(fe::SYNC), ParseComplete(true), Rfq(DONE)],
            false, true),
        ("an error skips to Sync: the hidden ParseComplete never comes",
            &[InjectedParse, Sent(fe::BIND), Sent(fe::EXECUTE), Sent(fe::SYNC), Error(false, ErrorFor::Client), Rfq(FAILED)],
            false, true),
        ("an injected Parse+Sync (before a DEALLOCATE) and a Parse slipped into the segment",
            &[InjectedRequest, InjectedParse, Sent(fe::BIND), Sent(fe::EXECUTE), Sent(fe::SYNC),
              ParseComplete(true), Rfq(Ready::Swallowed), ParseComplete(true), Rfq(DONE)], false, true),
        ("the client's Parse, then pgrouter's before a Bind, in one segment: only the second is hidden",
            &[InjectedRequest, Sent(fe::PARSE), Sent(fe::BIND), Sent(fe::EXECUTE), Sent(fe::BIND), InjectedParse,
              Sent(fe::EXECUTE), Sent(fe::SYNC), ParseComplete(true), Rfq(Ready::Swallowed),
              ParseComplete(false), ParseComplete(true), Rfq(DONE)], false, true),
        ("an error in one pipelined segment leaves the next one's hidden Parse expected",
            &[Sent(fe::BIND), Sent(fe::EXECUTE), Sent(fe::SYNC), InjectedParse, Sent(fe::BIND), Sent(fe::EXECUTE),
              Sent(fe::SYNC), Error(false, ErrorFor::Client), Rfq(Ready::Client { done: false, failed: true }),
              ParseComplete(true), Rfq(DONE)], false, true),
        ("stale statement closed first",
            &[InjectedClose, Sent(fe::PARSE), Sent(fe::SYNC), CloseComplete(true), ParseComplete(false), Rfq(DONE)],
            false, true),
        ("asyncpg prepares with Parse Describe Flush; pgrouter closes the segment",
            &[Sent(fe::PARSE), Sent(fe::DESCRIBE), Sent(fe::FLUSH), ParseComplete(false), CloseIdleSegment(true),
              Rfq(Ready::Hidden)], false, true),
        ("a segment that binds is never closed by pgrouter",
            &[Sent(fe::PARSE), Sent(fe::BIND), Sent(fe::FLUSH), CloseIdleSegment(false)], true, false),
        ("an error in a segment pgrouter closed is not the next request's",
            &[Sent(fe::PARSE), Sent(fe::FLUSH), CloseIdleSegment(true), Error(false, ErrorFor::Client), Rfq(Ready::Hidden),
              Sent(fe::QUERY), Rfq(DONE)], false, true),
        ("COPY FROM STDIN: Syncs during copy-in owe nothing",
            &[Sent(fe::QUERY), Sent(fe::SYNC), Sent(fe::SYNC), Sent(fe::COPY_DONE), Rfq(DONE)], false, true),
        ("extended COPY: Execute, then copy data, CopyDone, Sync",
            &[Sent(fe::BIND), Sent(fe::EXECUTE), Sent(fe::COPY_DONE), Sent(fe::SYNC), Rfq(DONE)], false, true),
        ("fast-path function call", &[Sent(fe::FUNCTION_CALL), Rfq(DONE)], false, true),
        ("an error on an idle connection is nobody's", &[Error(true, ErrorFor::Unsolicited)], false, false),
        ("FATAL in a request: the connection is not reused",
            &[Sent(fe::QUERY), Error(true, ErrorFor::Client), Rfq(FAILED)], false, false),
        ("a held read refused and moved to the primary",
            &[Sent(fe::PARSE), Sent(fe::BIND), Sent(fe::EXECUTE), Sent(fe::SYNC), Moved, Rfq(Ready::Swallowed)],
            false, true),
        ("a reply still owed", &[Sent(fe::QUERY)], true, true),
        ("a segment still open, its ParseComplete to come", &[Sent(fe::PARSE)], true, false),
    ];
    for (what, steps, busy, reusable) in cases {
        let l = run(steps);
        assert_eq!(l.busy(), *busy, "{what}: busy");
        assert_eq!(l.reusable(), *reusable, "{what}: reusable");
    }
}

/// One portal of an extended-protocol segment as drivers send it: `[Parse] Bind [Describe]
/// Execute`, with pgrouter's own `Parse` slipped in before the `Bind` when the statement is
/// not prepared on this connection yet, and whether the server fails its `Execute`.
#[derive(Debug, Clone)]
struct Portal {
    client_parse: bool,
    injected_parse: bool,
    describe: bool,
    fails: bool,
}

/// A client request as the drivers of the matrix send them, with what pgrouter adds before
/// it (a replay of session state, which may fail; a stale statement closed).
#[derive(Debug, Clone)]
enum Request {
    /// A simple query (libpq `PQexec`, psql, pgbench `-M simple`, COPY-less scripts).
    Query { fails: bool },
    /// `Parse Describe Sync` alone (`PQprepare`, pgjdbc's describe).
    Prepare { injected_close: bool, fails: bool },
    /// Portals then one `Sync` (`PQexecParams`, pgx, asyncpg, node-postgres, pgjdbc
    /// batches put several portals in one segment).
    Segment(Vec<Portal>),
    /// A `Close` of a statement and `Sync` (pgjdbc, psycopg's `DEALLOCATE` path).
    Close,
    /// A fast-path function call (libpq large objects).
    FunctionCall { fails: bool },
}

/// What the server sends that the ledger judges, and the client may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    ParseComplete,
    CloseComplete,
    Error,
    Ready,
}

/// A PostgreSQL server's replies to a message stream, for the messages the ledger tracks:
/// (the reply, the index of the message it answers). Each message is (tag, fails,
/// pgrouter's own). Errors skip the rest of an extended segment up to its `Sync`.
fn server(messages: &[(u8, bool, bool)]) -> Vec<(Reply, usize)> {
    let mut out = Vec::new();
    let mut skipping = false;
    for (i, &(tag, fails, _)) in messages.iter().enumerate() {
        match tag {
            fe::QUERY | fe::FUNCTION_CALL => {
                if fails {
                    out.push((Reply::Error, i));
                }
                out.push((Reply::Ready, i));
            }
            fe::SYNC => {
                skipping = false;
                out.push((Reply::Ready, i));
            }
            _ if skipping => {}
            fe::PARSE if fails => {
                out.push((Reply::Error, i));
                skipping = true;
            }
            fe::PARSE => out.push((Reply::ParseComplete, i)),
            fe::CLOSE => out.push((Reply::CloseComplete, i)),
            fe::EXECUTE if fails => {
                out.push((Reply::Error, i));
                skipping = true;
            }
            _ => {}
        }
    }
    out
}

/// The messages for `requests`: (tag, fails, pgrouter's own).
fn messages(requests: &[(bool, bool, Request)]) -> Vec<(u8, bool, bool)> {
    let mut m = Vec::new();
    for (replay, replay_fails, request) in requests {
        if *replay {
            m.push((fe::QUERY, *replay_fails, true));
        }
        match request {
            Request::Query { fails } => m.push((fe::QUERY, *fails, false)),
            Request::FunctionCall { fails } => m.push((fe::FUNCTION_CALL, *fails, false)),
            Request::Prepare {
                injected_close,
                fails,
            } => {
                if *injected_close {
                    m.push((fe::CLOSE, false, true));
                }
                m.push((fe::PARSE, *fails, false));
                m.push((fe::DESCRIBE, false, false));
                m.push((fe::SYNC, false, false));
            }
            Request::Close => {
                m.push((fe::CLOSE, false, false));
                m.push((fe::SYNC, false, false));
            }
            Request::Segment(portals) => {
                for p in portals {
                    if p.client_parse {
                        m.push((fe::PARSE, false, false));
                    }
                    if p.injected_parse {
                        m.push((fe::PARSE, false, true));
                    }
                    m.push((fe::BIND, false, false));
                    if p.describe {
                        m.push((fe::DESCRIBE, false, false));
                    }
                    m.push((fe::EXECUTE, p.fails, false));
                }
                m.push((fe::SYNC, false, false));
            }
        }
    }
    m
}

fn portal() -> impl proptest::strategy::Strategy<Value = Portal> {
    use proptest::prelude::*;
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        proptest::bool::weighted(0.2),
    )
        .prop_map(|(client_parse, injected, describe, fails)| Portal {
            client_parse,
            // pgrouter prepares only statements the client did not send a Parse for.
            injected_parse: injected && !client_parse,
            describe,
            fails,
        })
}

fn request() -> impl proptest::strategy::Strategy<Value = (bool, bool, Request)> {
    use proptest::prelude::*;
    let fails = || proptest::bool::weighted(0.2);
    let request = prop_oneof![
        fails().prop_map(|fails| Request::Query { fails }),
        fails().prop_map(|fails| Request::FunctionCall { fails }),
        (any::<bool>(), fails()).prop_map(|(injected_close, fails)| Request::Prepare {
            injected_close,
            fails
        }),
        Just(Request::Close),
        proptest::collection::vec(portal(), 1..4).prop_map(Request::Segment),
    ];
    (
        proptest::bool::weighted(0.3),
        proptest::bool::weighted(0.1),
        request,
    )
}

proptest::proptest! {
    /// Any sequence of the drivers' requests, pipelined on one connection, with pgrouter's
    /// replays and invisible prepares among them and errors anywhere: the client sees exactly
    /// the replies a server would have sent to its messages alone, each `ReadyForQuery` of its
    /// own says whether its request failed, and afterwards the connection owes nothing.
    #[test]
    fn the_client_sees_what_its_own_messages_would_get(
        requests in proptest::collection::vec(request(), 1..8)
    ) {
        let all = messages(&requests);
        let client_only: Vec<_> = all.iter().copied().filter(|(_, _, ours)| !ours).collect();
        let expected: Vec<Reply> = server(&client_only).into_iter().map(|(r, _)| r).collect();

        let mut l = Ledger::default();
        let replies = server(&all);
        let mut next_reply = 0;
        let mut seen = Vec::new();
        let mut failed_since_ready = false;
        // Feeds the ledger the server's replies to the messages before `upto`.
        let mut receive = |l: &mut Ledger, upto: usize, seen: &mut Vec<Reply>| -> Result<(), proptest::test_runner::TestCaseError> {
            while let Some(&(reply, answers)) = replies.get(next_reply).filter(|(_, m)| *m < upto) {
                let _ = answers;
                next_reply += 1;
                let swallowing = l.swallowing();
                let hidden = match reply {
                    Reply::ParseComplete => l.parse_complete(),
                    Reply::CloseComplete => l.close_complete(),
                    Reply::Error => l.error(false) == ErrorFor::Injected,
                    Reply::Ready => match l.ready_for_query() {
                        Ready::Swallowed | Ready::Hidden => true,
                        Ready::Client { failed, .. } => {
                            proptest::prop_assert_eq!(failed, failed_since_ready, "failed flag");
                            false
                        }
                    },
                };
                if !(swallowing || hidden) {
                    match reply {
                        Reply::Error => failed_since_ready = true,
                        Reply::Ready => failed_since_ready = false,
                        _ => {}
                    }
                    seen.push(reply);
                }
            }
            Ok(())
        };
        for (i, &(tag, _, ours)) in all.iter().enumerate() {
            match (ours, tag) {
                (false, tag) => l.sent(tag),
                (true, fe::QUERY) => {
                    // pgrouter injects a request (a replay) only into a connection that owes
                    // nothing: the session waits for it to finish first.
                    receive(&mut l, i, &mut seen)?;
                    proptest::prop_assert!(!l.busy());
                    l.injected_request();
                }
                (true, fe::PARSE) => l.injected_parse(),
                (true, _) => l.injected_close(),
            }
        }
        receive(&mut l, all.len(), &mut seen)?;
        proptest::prop_assert_eq!(seen, expected);
        proptest::prop_assert!(!l.busy());
        proptest::prop_assert_eq!(l.owed(), 0);
    }
}

#[test]
fn hand_back() {
    let mut l = Ledger::default();
    l.sent(fe::QUERY);
    assert!(
        !l.needs_reset(),
        "a plain statement leaves the connection clean"
    );
    let mut replayed = Ledger::default();
    replayed.set_replayed(2);
    assert!(replayed.needs_reset());
    let mut untracked = Ledger::default();
    untracked.note_untracked_state();
    assert!(untracked.needs_reset());
}

#[test]
fn owed_and_errors() {
    let mut l = Ledger::default();
    l.sent(fe::QUERY);
    l.sent(fe::QUERY);
    assert_eq!(l.owed(), 2);
    assert_eq!(l.error(false), ErrorFor::Client);
    assert!(l.saw_error());
    assert_eq!(
        l.ready_for_query(),
        Ready::Client {
            done: false,
            failed: true
        }
    );
    assert!(!l.saw_error(), "the error belonged to the first request");
    assert_eq!(l.ready_for_query(), DONE);
    assert_eq!(l.owed(), 0);
    // Tags that owe nothing.
    for tag in [fe::COPY_DATA, be::READY_FOR_QUERY] {
        l.sent(tag);
    }
    assert!(!l.busy());
    l.sent(fe::BIND);
    assert!(l.in_running_segment());
}
