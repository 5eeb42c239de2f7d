"""Driver conformance: one scenario, run through pgrouter by a real driver.

    python3 conformance.py DRIVER ROUTER_URL DIRECT_URL PRIMARY_PORT TABLE [ENCODING]
    python3 conformance.py --list      (every driver name, one a line)

DRIVER is one of the names in DRIVERS or EXTERNAL below. ROUTER_URL reaches pgrouter, DIRECT_URL the primary
itself (same user): it is the witness. TABLE is a table name of this run's own; the script
creates it. ENCODING, when given, is the client_encoding the driver sets (e.g. LATIN1).

TABLE also names the LISTEN/NOTIFY channel: runs in parallel share the database, and a NOTIFY
reaches every listener of its channel.

Every write carries a unique key. At the end the script reads the table on the primary directly
and checks that every acknowledged write is there exactly once and that nothing the scenario
rolled back is. Where a statement ran is read from the servers (inet_server_port(),
pg_is_in_recovery()). A failed check raises AssertionError; success prints one line.
"""

import asyncio
import sys
import time

import psycopg
from psycopg import pq

LISTING = sys.argv[1:2] == ["--list"]
DRIVER, ROUTER, DIRECT, PRIMARY_PORT, TABLE = sys.argv[1:6] if not LISTING else ["", "", "", "0", ""]
PRIMARY_PORT = int(PRIMARY_PORT)
ENCODING = sys.argv[6] if len(sys.argv) > 6 and not LISTING else None
# Text that is not ASCII: 'café' is one byte shorter in LATIN1 than in UTF-8, and is not valid
# UTF-8 there.
WORD = "café"

# Keys of acknowledged (committed) writes, and of writes that must not exist.
acked = []
forbidden = []


def expect(cond, what):
    if not cond:
        raise AssertionError(f"[{DRIVER}] {what}")


def witness(sql, params=None):
    with psycopg.connect(DIRECT, autocommit=True) as c:
        cur = c.execute(sql, params)
        return cur.fetchall() if cur.description else []


def on_primary(port, in_recovery):
    expect(
        (port == PRIMARY_PORT) != bool(in_recovery), f"inconsistent place {port} {in_recovery}"
    )
    return port == PRIMARY_PORT


def final_check():
    rows = dict(witness(f"SELECT k, count(*) FROM {TABLE} GROUP BY k"))
    for k in acked:
        expect(rows.get(k) == 1, f"acknowledged write {k} is there {rows.get(k, 0)} times")
    for k in forbidden:
        expect(k not in rows, f"rolled-back write {k} is there")
    extra = set(rows) - set(acked)
    expect(not extra, f"writes nobody acknowledged: {sorted(extra)}")
    if DRIVER not in EXTERNAL:
        # The Python scenarios store WORD with every key ending in 7, in the client's encoding.
        words = witness(f"SELECT count(*) FROM {TABLE} WHERE word = %s", (WORD,))[0][0]
        expect(words == sum(1 for k in acked if k % 10 == 7), f"non-ASCII text stored {words} times")


def key(n):
    """Keys ending in 7 carry the non-ASCII word."""
    return n


def word_for(k):
    return WORD if k % 10 == 7 else None


# ---------------------------------------------------------------------------------------------
# libpq itself (psycopg's binding of the real libpq: PQprepare, PQexecPrepared, pipeline mode)


def run_libpq():
    extra = {"client_encoding": ENCODING} if ENCODING else {}
    conninfo = psycopg.conninfo.make_conninfo(ROUTER, **extra)
    c = pq.PGconn.connect(conninfo.encode())
    expect(c.status == pq.ConnStatus.OK, f"connect: {c.error_message}")
    enc = (ENCODING or "utf-8").replace("LATIN1", "latin-1")
    OK = (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK)

    def ok(r, what):
        expect(r.status in OK, f"{what}: {r.error_message.decode(enc, 'replace')}")
        return r

    def val(r, row=0, col=0):
        v = r.get_value(row, col)
        return None if v is None else v.decode(enc)

    # The unnamed statement across round trips (PHP pg_prepare/pg_execute, Ruby pg, lib/pq).
    ok(c.prepare(b"", b"SELECT $1::int AS x, inet_server_port(), pg_is_in_recovery()"), "prepare")
    r = ok(c.exec_prepared(b"", [b"1"]), "exec unnamed select")
    expect(val(r) == "1", "unnamed select result")
    ok(c.prepare(b"", f"INSERT INTO {TABLE}(k) VALUES ($1::int) RETURNING k".encode()), "prepare")
    r = ok(c.exec_prepared(b"", [b"101"]), "exec unnamed insert")
    expect(
        r.command_status.startswith(b"INSERT") and val(r) == "101",
        f"the unnamed INSERT ran as {r.command_status!r} returning {val(r)}",
    )
    expect(witness(f"SELECT count(*) FROM {TABLE} WHERE k = 101")[0][0] == 1, "row 101 inserted")
    acked.append(101)
    # The unnamed statement described in its own round trip, then run (pgx describe-exec).
    ok(c.prepare(b"", b"SELECT inet_server_port(), pg_is_in_recovery(), $1::text"), "prepare")
    d = ok(c.describe_prepared(b""), "describe unnamed")
    expect(d.nfields == 3 and d.nparams == 1, "describe unnamed statement shape")
    r = ok(c.exec_prepared(b"", [b"x"]), "exec described")
    expect(val(r, 0, 2) == "x", "described statement result")
    # A simple query destroys the unnamed statement: binding it again is PostgreSQL's 26000.
    ok(c.exec_(b"SELECT 1"), "simple query")
    r = c.exec_prepared(b"", [b"1"])
    expect(
        r.status == pq.ExecStatus.FATAL_ERROR and r.error_field(pq.DiagnosticField.SQLSTATE) == b"26000",
        f"bind of the destroyed unnamed statement: {r.status} {r.error_message}",
    )

    # Named statements across round trips; a write after a read.
    ok(c.prepare(b"rd", b"SELECT inet_server_port(), pg_is_in_recovery(), $1::int"), "prepare rd")
    ok(c.prepare(b"wr", f"INSERT INTO {TABLE}(k, word) VALUES ($1::int, $2)".encode()), "prepare wr")
    for i in range(3):
        r = ok(c.exec_prepared(b"rd", [str(i).encode()]), "exec rd")
        expect(val(r, 0, 2) == str(i), "rd result")
        k = 110 + i
        w = word_for(k)
        ok(c.exec_prepared(b"wr", [str(k).encode(), w.encode(enc) if w else None]), "exec wr")
        acked.append(k)
    ok(c.exec_prepared(b"wr", [b"117", WORD.encode(enc)]), "exec wr 117")
    acked.append(117)
    # A name never prepared by this client: 26000, and no other client's statement runs.
    r = c.exec_prepared(b"never_prepared_here", [])
    expect(r.error_field(pq.DiagnosticField.SQLSTATE) == b"26000", f"unknown name: {r.error_message}")
    # DEALLOCATE, then the same name again with another definition.
    ok(c.exec_(b"DEALLOCATE rd"), "deallocate")
    r = c.exec_prepared(b"rd", [b"1"])
    expect(r.error_field(pq.DiagnosticField.SQLSTATE) == b"26000", "rd after DEALLOCATE")
    ok(c.prepare(b"rd", b"SELECT $1::int * 2"), "re-prepare rd")
    r = ok(c.exec_prepared(b"rd", [b"21"]), "exec new rd")
    expect(val(r) == "42", f"re-prepared rd: {val(r)}")
    ok(c.exec_(b"DEALLOCATE ALL"), "deallocate all")
    ok(c.prepare(b"wr", f"INSERT INTO {TABLE}(k) VALUES ($1::int)".encode()), "re-prepare wr")
    ok(c.exec_prepared(b"wr", [b"120"]), "exec wr after DEALLOCATE ALL")
    acked.append(120)
    ok(c.exec_(b"DISCARD PLANS"), "discard plans")
    ok(c.exec_prepared(b"wr", [b"121"]), "exec wr after DISCARD PLANS")
    acked.append(121)
    # DISCARD ALL drops every statement: binding one is 26000, preparing the name again works.
    ok(c.exec_(b"DISCARD ALL"), "discard all")
    r = c.exec_prepared(b"wr", [b"122"])
    expect(r.error_field(pq.DiagnosticField.SQLSTATE) == b"26000", f"wr after DISCARD ALL: {r.status}")
    ok(c.prepare(b"wr", f"INSERT INTO {TABLE}(k) VALUES ($1::int)".encode()), "re-prepare wr")
    ok(c.exec_prepared(b"wr", [b"122"]), "exec wr after DISCARD ALL")
    acked.append(122)

    # Non-ASCII text in the client encoding through the simple protocol: a write stays a write.
    r = ok(c.exec_(f"INSERT INTO {TABLE}(k, word) VALUES (127, '{WORD}') RETURNING inet_server_port(), pg_is_in_recovery()".encode(enc)), "insert word")
    expect(on_primary(int(val(r)), val(r, 0, 1) == "t"), "non-ASCII insert ran on the primary")
    acked.append(127)
    r = ok(c.exec_(f"SELECT '{WORD}'::text".encode(enc)), "select word")
    expect(val(r) == WORD, f"non-ASCII text came back as {val(r)!r}")

    # Pipeline mode: several extended-protocol statements, one Sync.
    c.enter_pipeline_mode()
    c.send_query_params(f"INSERT INTO {TABLE}(k) VALUES ($1::int)".encode(), [b"130"])
    c.send_query_params(b"SELECT $1::int + 1", [b"1"])
    c.send_query_params(f"INSERT INTO {TABLE}(k) VALUES ($1::int)".encode(), [b"131"])
    c.pipeline_sync()
    c.flush()
    results = []
    while True:
        r = c.get_result()
        if r is None:
            continue
        if r.status == pq.ExecStatus.PIPELINE_SYNC:
            break
        results.append(r)
    c.exit_pipeline_mode()
    expect([r.status in OK for r in results] == [True, True, True], "pipeline results")
    expect(val(results[1]) == "2", "pipeline select")
    acked.extend([130, 131])

    # An explicit transaction with a savepoint, through the unnamed statement.
    ok(c.exec_(b"BEGIN"), "begin")
    ok(c.exec_params(f"INSERT INTO {TABLE}(k) VALUES ($1::int)".encode(), [b"140"]), "insert 140")
    ok(c.exec_(b"SAVEPOINT s"), "savepoint")
    ok(c.exec_params(f"INSERT INTO {TABLE}(k) VALUES ($1::int)".encode(), [b"141"]), "insert 141")
    ok(c.exec_(b"ROLLBACK TO SAVEPOINT s"), "rollback to")
    ok(c.exec_(b"COMMIT"), "commit")
    acked.append(140)
    forbidden.append(141)
    # A read-write transaction whose first statement binds an unnamed read prepared earlier
    # (on a replica): the transaction runs on the primary all the same.
    ok(c.prepare(b"", b"SELECT pg_is_in_recovery()"), "prepare unnamed read")
    ok(c.exec_prepared(b"", []), "exec unnamed read")
    ok(c.exec_(b"BEGIN"), "begin")
    r = ok(c.exec_prepared(b"", []), "unnamed read opening a transaction")
    expect(val(r) == "f", "a read-write transaction runs on the primary")
    ok(c.exec_params(f"INSERT INTO {TABLE}(k) VALUES ($1::int)".encode(), [b"142"]), "insert 142")
    ok(c.exec_(b"COMMIT"), "commit")
    acked.append(142)
    # The same with the unnamed statement on the primary: pgrouter's own BEGIN (sent with the
    # first statement) must not destroy it.
    ok(c.prepare(b"", f"INSERT INTO {TABLE}(k) VALUES ($1::int)".encode()), "prepare unnamed insert")
    ok(c.exec_(b"BEGIN"), "begin")
    ok(c.exec_prepared(b"", [b"143"]), "unnamed insert opening a transaction")
    ok(c.exec_(b"COMMIT"), "commit")
    acked.append(143)
    # And after a SET, which is replayed on the other connection before its next use.
    ok(c.prepare(b"", b"SELECT $1::int"), "prepare unnamed read")
    ok(c.exec_(b"SET application_name = 'conformance'"), "set")
    r = c.exec_prepared(b"", [b"5"])
    expect(r.error_field(pq.DiagnosticField.SQLSTATE) == b"26000", "a simple query destroyed the unnamed statement")
    # SET ROLE is session state too.
    ok(c.exec_(b"SET ROLE conformance_reader"), "set role")
    for _ in range(3):
        expect(val(ok(c.exec_(b"SELECT current_user"), "current_user")) == "conformance_reader", "SET ROLE followed the session")
    ok(c.exec_(b"RESET ROLE"), "reset role")
    # The server connection killed in the middle of a transaction.
    ok(c.exec_(b"BEGIN"), "begin")
    pid = int(val(ok(c.exec_params(f"INSERT INTO {TABLE}(k) VALUES ($1::int) RETURNING pg_backend_pid()".encode(), [b"150"]), "insert 150")))
    forbidden.extend([150, 151])
    witness("SELECT pg_terminate_backend(%s)", (pid,))
    time.sleep(0.3)
    r = c.exec_params(f"INSERT INTO {TABLE}(k) VALUES ($1::int)".encode(), [b"151"])
    expect(r.status not in OK, "a statement of a transaction whose server connection died succeeded")
    c.exec_(b"ROLLBACK")
    if c.status != pq.ConnStatus.OK:
        c.finish()
        c = pq.PGconn.connect(psycopg.conninfo.make_conninfo(ROUTER).encode())
    ok(c.exec_params(f"INSERT INTO {TABLE}(k) VALUES ($1::int)".encode(), [b"152"]), "insert after the kill")
    acked.append(152)
    c.finish()


# ---------------------------------------------------------------------------------------------
# Results equal a direct connection's: the same queries through pgrouter and straight to the
# primary, with the same driver, compared field by field (column names and types, rows, command
# tags, SQLSTATEs). The reads run on a replica through pgrouter: their answers must not differ.

SAME_AS_DIRECT = [
    "SELECT 1::int2 AS a, 2::int4 AS b, 3::int8 AS c, 1.50::numeric AS d, 2.5::float8 AS e, 'x'::text AS f, NULL::text AS g, true AS h",
    f"SELECT '{WORD}'::text AS w, upper('{WORD}') AS u, length('{WORD}') AS n, octet_length('{WORD}') AS o",
    "SELECT '{1,2,NULL}'::int[] AS arr, '{\"a\": [1, null]}'::jsonb AS j, '\\xdeadbeef'::bytea AS b, interval '1 day 2 hours' AS i",
    "SELECT '2024-02-29 12:34:56.789+00'::timestamptz AS t, '2024-02-29'::date AS d, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS u",
    "SELECT g, md5(g::text) FROM generate_series(1, 2000) g",
    "SELECT 1 WHERE false",
    "SELECT 1/0",
    "SELECT * FROM no_such_table_anywhere",
    "SELEC 1",
    "SHOW server_version_num",
    "BEGIN",
    f"INSERT INTO {TABLE}(k) SELECT -g FROM generate_series(1, 3) g",
    f"UPDATE {TABLE} SET word = 'x' WHERE k < 0",
    f"DELETE FROM {TABLE} WHERE k < 0",
    "ROLLBACK",
]


def psycopg_outcome(conn, sql):
    try:
        cur = conn.execute(sql)
        desc = [(d.name, d.type_code) for d in cur.description] if cur.description else None
        return ("ok", cur.statusmessage, desc, cur.fetchall() if cur.description else None)
    except psycopg.Error as e:
        return ("error", e.sqlstate)


def psycopg_same_as_direct(**kw):
    kw.setdefault("autocommit", True)
    with psycopg.connect(ROUTER, **kw) as routed, psycopg.connect(DIRECT, **kw) as direct:
        if ENCODING:
            for c in (routed, direct):
                c.execute(f"SET client_encoding = '{ENCODING}'")
        for sql in SAME_AS_DIRECT:
            a, b = psycopg_outcome(routed, sql), psycopg_outcome(direct, sql)
            expect(a == b, f"through pgrouter and directly differ for {sql!r}:\n{a!r:.400}\n{b!r:.400}")


async def asyncpg_same_as_direct(cache):
    import asyncpg

    async def outcome(conn, sql):
        try:
            stmt = await conn.prepare(sql)
            rows = await stmt.fetch()
            attrs = [(a.name, a.type.oid) for a in stmt.get_attributes()]
            return ("ok", stmt.get_statusmsg(), attrs, [tuple(r) for r in rows])
        except asyncpg.PostgresError as e:
            return ("error", e.sqlstate)

    routed = await asyncpg.connect(ROUTER, statement_cache_size=cache)
    direct = await asyncpg.connect(DIRECT, statement_cache_size=cache)
    try:
        for sql in SAME_AS_DIRECT:
            if sql in ("BEGIN", "ROLLBACK"):
                # asyncpg runs transaction control through its own API only.
                for c in (routed, direct):
                    await c.execute(sql)
                continue
            a, b = await outcome(routed, sql), await outcome(direct, sql)
            expect(a == b, f"through pgrouter and directly differ for {sql!r}:\n{a!r:.400}\n{b!r:.400}")
    finally:
        await routed.close()
        await direct.close()


# ---------------------------------------------------------------------------------------------
# psycopg 3


def psycopg_connect(**kw):
    conn = psycopg.connect(ROUTER, autocommit=True, **kw)
    if ENCODING:
        conn.execute(f"SET client_encoding = '{ENCODING}'")
    return conn


def run_psycopg(variant):
    cursor_factory = psycopg.ClientCursor if variant == "client" else psycopg.Cursor
    # prepare_threshold=0: every statement is prepared (named) at once; None: never.
    prepare_threshold = {"client": None, "server": 0, "pipeline": 5}[variant]
    psycopg_same_as_direct(cursor_factory=cursor_factory, prepare_threshold=prepare_threshold)
    with psycopg_connect(cursor_factory=cursor_factory, prepare_threshold=prepare_threshold) as conn:
        cur = conn.cursor()
        where = "inet_server_port(), pg_is_in_recovery()"

        # Autocommit reads and writes.
        reads_on = set()
        for i in range(6):
            cur.execute(f"SELECT {where}, %s::int", (i,))
            port, rec, v = cur.fetchone()
            on_primary(port, rec)
            reads_on.add(port)
            expect(v == i, "read result")
        for k in (201, 202, 207):
            cur.execute(
                f"INSERT INTO {TABLE}(k, word) VALUES (%s, %s) RETURNING {where}", (k, word_for(k))
            )
            expect(on_primary(*cur.fetchone()), f"insert {k} ran on the primary")
            acked.append(k)

        # Batches: executemany (pipelined by psycopg on libpq >= 14).
        cur.executemany(f"INSERT INTO {TABLE}(k, word) VALUES (%s, %s)", [(k, word_for(k)) for k in (210, 211, 217)])
        acked.extend([210, 211, 217])
        if variant == "pipeline":
            with conn.pipeline():
                cur.execute(f"INSERT INTO {TABLE}(k) VALUES (%s)", (220,))
                cur.execute("SELECT %s::int", (5,))
                cur.execute(f"INSERT INTO {TABLE}(k) VALUES (%s)", (221,))
            acked.extend([220, 221])

        # Transactions, savepoints and rollbacks.
        with conn.transaction():
            cur.execute(f"INSERT INTO {TABLE}(k) VALUES (230)")
            try:
                with conn.transaction():
                    cur.execute(f"INSERT INTO {TABLE}(k) VALUES (231)")
                    raise RuntimeError("roll back the savepoint")
            except RuntimeError:
                pass
        acked.append(230)
        forbidden.append(231)
        try:
            with conn.transaction():
                cur.execute(f"INSERT INTO {TABLE}(k) VALUES (232)")
                cur.execute("SELECT 1/0")
        except psycopg.errors.DivisionByZero:
            pass
        forbidden.append(232)

        # COPY in and out.
        with cur.copy(f"COPY {TABLE}(k, word) FROM STDIN") as copy:
            copy.write_row((240, None))
            copy.write_row((247, WORD))
        acked.extend([240, 247])
        with cur.copy(f"/* pgrouter: primary */ COPY (SELECT k, word FROM {TABLE} WHERE k IN (240, 247) ORDER BY k) TO STDOUT") as copy:
            rows = list(copy.rows())
        expect(rows == [("240", None), ("247", WORD)], f"COPY out: {rows}")

        # Session state through SET and set_config follows the session wherever reads go.
        cur.execute("SET statement_timeout = '3456ms'")
        cur.execute("SELECT set_config('app.tenant', %s, false)", ("t42",))
        cur.execute("SELECT set_config('app.region', 'eu', false)")
        for _ in range(4):
            cur.execute(
                f"SELECT current_setting('statement_timeout'), current_setting('app.tenant'), current_setting('app.region'), {where}"
            )
            row = cur.fetchone()
            expect(row[:3] == ("3456ms", "t42", "eu"), f"session settings seen: {row}")
        # SET ROLE (a role app is a member of) is session state too.
        cur.execute("SET ROLE conformance_reader")
        for _ in range(3):
            cur.execute("SELECT current_user")
            expect(cur.fetchone()[0] == "conformance_reader", "SET ROLE followed the session")
        cur.execute("RESET ROLE")
        cur.execute("SELECT current_user")
        expect(cur.fetchone()[0] == "app", "RESET ROLE")

        # A temporary table lives where the session is.
        cur.execute("CREATE TEMP TABLE conf_tmp (v int)")
        cur.execute("INSERT INTO conf_tmp VALUES (1), (2)")
        cur.execute("SELECT sum(v) FROM conf_tmp")
        expect(cur.fetchone()[0] == 3, "temp table")

        # LISTEN/NOTIFY.
        cur.execute(f"LISTEN {TABLE}")
        cur.execute(f"NOTIFY {TABLE}, 'hello'")
        got = [n.payload for n in conn.notifies(timeout=2, stop_after=1)]
        expect(got == ["hello"], f"notifications: {got}")

        # Cancel a running statement.
        def cancel_soon():
            time.sleep(0.5)
            conn.cancel_safe()

        import threading

        t = threading.Thread(target=cancel_soon)
        t.start()
        try:
            cur.execute("SELECT pg_sleep(10)")
            expect(False, "pg_sleep was not cancelled")
        except psycopg.errors.QueryCanceled:
            pass
        t.join()
        cur.execute("SELECT 1")
        expect(cur.fetchone()[0] == 1, "session after cancel")

        # DISCARD ALL as a prepared statement (psycopg sends DEALLOCATE ALL, then prepares it):
        # it must run, and statements prepared after it must work.
        cur.execute("DISCARD ALL")
        cur.execute(f"INSERT INTO {TABLE}(k) VALUES (%s)", (260,))
        acked.append(260)
        cur.execute("SELECT %s::int", (7,))
        expect(cur.fetchone()[0] == 7, "statement after DISCARD ALL")

        # The server connection killed in the middle of a transaction: the transaction fails,
        # the client keeps its connection... or gets a clean error, never a wrong answer.
    with psycopg_connect(cursor_factory=cursor_factory, prepare_threshold=prepare_threshold) as conn:
        cur = conn.cursor()
        conn.autocommit = False
        cur.execute(f"INSERT INTO {TABLE}(k) VALUES (250) RETURNING pg_backend_pid()")
        pid = cur.fetchone()[0]
        forbidden.append(250)
        witness("SELECT pg_terminate_backend(%s)", (pid,))
        time.sleep(0.3)
        try:
            cur.execute(f"INSERT INTO {TABLE}(k) VALUES (251)")
            conn.commit()
            expect(False, "a transaction whose server connection died committed")
        except psycopg.OperationalError:
            pass
        forbidden.append(251)
        if not conn.closed:
            conn.rollback()
            cur.execute(f"INSERT INTO {TABLE}(k) VALUES (252)")
            conn.commit()
            acked.append(252)


# ---------------------------------------------------------------------------------------------
# asyncpg (its own protocol implementation; named statements with a cache, or unnamed)


async def run_asyncpg_async(cache):
    import asyncpg

    settings = {"client_encoding": ENCODING} if ENCODING else None
    if ENCODING:
        # asyncpg speaks UTF-8 only; it refuses other client encodings.
        return
    conn = await asyncpg.connect(ROUTER, statement_cache_size=cache, server_settings=settings)
    where = "inet_server_port(), pg_is_in_recovery()"
    for i in range(6):
        port, rec, v = await conn.fetchrow(f"SELECT {where}, $1::int", i)
        on_primary(port, rec)
        expect(v == i, "read result")
    for k in (301, 302, 307):
        port, rec = await conn.fetchrow(
            f"INSERT INTO {TABLE}(k, word) VALUES ($1, $2) RETURNING {where}", k, word_for(k)
        )
        expect(on_primary(port, rec), "insert on primary")
        acked.append(k)
    # The same text as a read, then as a write, alternating (statement cache reuse).
    for k in (310, 311):
        await conn.execute(f"INSERT INTO {TABLE}(k) VALUES ($1)", k)
        acked.append(k)
        expect(await conn.fetchval("SELECT $1::int", k) == k, "read after write")
    await conn.executemany(f"INSERT INTO {TABLE}(k) VALUES ($1)", [(320,), (321,), (322,)])
    acked.extend([320, 321, 322])
    async with conn.transaction():
        await conn.execute(f"INSERT INTO {TABLE}(k) VALUES (330)")
        try:
            async with conn.transaction():
                await conn.execute(f"INSERT INTO {TABLE}(k) VALUES (331)")
                raise RuntimeError("roll back the savepoint")
        except RuntimeError:
            pass
    acked.append(330)
    forbidden.append(331)
    await conn.copy_records_to_table(TABLE, records=[(340, None), (347, WORD)], columns=["k", "word"])
    acked.extend([340, 347])
    rows = await conn.fetch(f"/* pgrouter: primary */ SELECT k, word FROM {TABLE} WHERE k IN (340, 347) ORDER BY k")
    expect([tuple(r) for r in rows] == [(340, None), (347, WORD)], f"copy in: {rows}")
    import io

    out = io.BytesIO()
    await conn.copy_from_query("SELECT 1 UNION ALL SELECT 2", output=out)
    expect(out.getvalue() == b"1\n2\n", f"COPY out: {out.getvalue()!r}")
    await conn.execute("SET ROLE conformance_reader")
    for _ in range(3):
        expect(await conn.fetchval("SELECT current_user") == "conformance_reader", "SET ROLE followed the session")
    await conn.execute("RESET ROLE")
    # An array result makes asyncpg introspect its type, with JIT turned off around it through
    # set_config('jit', $1, false): a setting bound at run time, replayed like SET, so reads
    # stay on the replicas.
    expect(await conn.fetchval("SELECT '{1,2}'::int[]") == [1, 2], "array")
    await conn.execute("SELECT set_config('app.tenant', $1, false)", "a42")
    for _ in range(4):
        v, rec = await conn.fetchrow("SELECT current_setting('app.tenant'), pg_is_in_recovery()")
        expect(v == "a42", f"set_config followed the session: {v}")
        expect(rec, "a read after set_config with a bound value ran on the primary")
    await conn.execute("CREATE TEMP TABLE conf_tmp (v int)")
    await conn.execute("INSERT INTO conf_tmp VALUES (1), (2)")
    expect(await conn.fetchval("SELECT sum(v) FROM conf_tmp") == 3, "temp table")
    got = asyncio.get_running_loop().create_future()
    await conn.add_listener(TABLE, lambda *a: got.done() or got.set_result(a[3]))
    await conn.execute(f"NOTIFY {TABLE}, 'hi'")
    expect(await asyncio.wait_for(got, 3) == "hi", "notification")
    try:
        await conn.execute("SELECT pg_sleep(10)", timeout=0.5)
        expect(False, "timeout did not cancel")
    except asyncio.TimeoutError:
        pass
    expect(await conn.fetchval("SELECT 1") == 1, "session after cancel")
    await conn.close()
    # The server connection killed in the middle of a transaction.
    conn = await asyncpg.connect(ROUTER, statement_cache_size=cache)
    tx = conn.transaction()
    await tx.start()
    pid = await conn.fetchval(f"INSERT INTO {TABLE}(k) VALUES (350) RETURNING pg_backend_pid()")
    forbidden.extend([350, 351])
    witness("SELECT pg_terminate_backend(%s)", (pid,))
    await asyncio.sleep(0.3)
    try:
        await conn.execute(f"INSERT INTO {TABLE}(k) VALUES (351)")
        await tx.commit()
        expect(False, "a transaction whose server connection died committed")
    except (asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError):
        pass
    try:
        await tx.rollback()
    except (asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError):
        pass
    if conn.is_closed():
        conn = await asyncpg.connect(ROUTER, statement_cache_size=cache)
    await conn.execute(f"INSERT INTO {TABLE}(k) VALUES (352)")
    acked.append(352)
    await conn.close()


def run_asyncpg(cache):
    asyncio.run(run_asyncpg_async(cache))
    if not ENCODING:
        asyncio.run(asyncpg_same_as_direct(cache))


# ---------------------------------------------------------------------------------------------
# Drivers in other languages: a program each (tests/clients/<language>/) runs the same scenario
# and prints "ACK k" / "NO k" lines; the checks against the primary are made here.

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]
CLIENTS = REPO / "tests" / "clients"
MISSING = 3  # exit status for "a driver or its toolchain is not installed"


def missing(what):
    print(f"MISSING: {what}", file=sys.stderr)
    sys.exit(MISSING)


def go_binary():
    """Builds the Go program offline from Debian's packages (GOPATH mode), once per source."""
    import os
    import shutil
    import subprocess

    src = CLIENTS / "go" / "conformance.go"
    gopath = "/usr/share/gocode"
    if not shutil.which("go") or not os.path.isdir(f"{gopath}/src/github.com/jackc/pgx/v4") or not os.path.isdir(f"{gopath}/src/github.com/lib/pq"):
        missing("go with lib/pq and pgx v4 (apt-get install golang-go golang-github-lib-pq-dev golang-github-jackc-pgx-v4-dev)")
    out_dir = REPO / "target" / "drivers"
    out_dir.mkdir(parents=True, exist_ok=True)
    binary = out_dir / "go-conformance"
    if binary.exists() and binary.stat().st_mtime >= src.stat().st_mtime:
        return str(binary)
    tmp = out_dir / f"go-conformance.{os.getpid()}"
    env = dict(os.environ, GO111MODULE="off", GOPATH=gopath, GOFLAGS="", GOCACHE=str(out_dir / "gocache"))
    subprocess.run(["go", "build", "-o", str(tmp), str(src)], check=True, env=env)
    os.replace(tmp, binary)  # atomic: parallel tests may build at once
    return str(binary)


def external_command(driver):
    import shutil
    from urllib.parse import urlparse

    u = urlparse(ROUTER)
    host, port = u.hostname, str(u.port)
    if driver in ("node-pg", "postgres-js"):
        if not shutil.which("node") or not (CLIENTS / "node" / "node_modules" / "pg").is_dir():
            missing("node with tests/clients/node's packages (npm ci --prefix tests/clients/node)")
        return ["node", str(CLIENTS / "node" / "conformance.mjs"), driver, ROUTER, TABLE, DIRECT]
    if driver.startswith("pgjdbc-"):
        jar = "/usr/share/java/postgresql.jar"
        if not shutil.which("java") or not __import__("os").path.exists(jar):
            missing("java with pgjdbc (apt-get install default-jre-headless libpostgresql-jdbc-java)")
        threshold = driver.split("-", 1)[1]
        url = f"jdbc:postgresql://{host}:{port}/app"
        return ["java", "-cp", jar, str(CLIENTS / "jdbc" / "Conformance.java"), url, u.username, u.password, TABLE, threshold, DIRECT]
    if driver in ("php-pg", "php-pdo"):
        import subprocess

        ok = shutil.which("php") and subprocess.run(["php", "-r", "exit(function_exists('pg_connect') && in_array('pgsql', PDO::getAvailableDrivers()) ? 0 : 1);"]).returncode == 0
        if not ok:
            missing("php with pgsql and pdo_pgsql (apt-get install php-cli php-pgsql)")
        return ["php", str(CLIENTS / "php" / "conformance.php"), driver, host, port, TABLE, DIRECT]
    if driver == "ruby-pg":
        import subprocess

        if not shutil.which("ruby") or subprocess.run(["ruby", "-e", "require 'pg'"], capture_output=True).returncode != 0:
            missing("ruby with pg (apt-get install ruby-pg)")
        return ["ruby", str(CLIENTS / "ruby" / "conformance.rb"), host, port, TABLE, DIRECT]
    if driver.startswith("go-"):
        return [go_binary(), driver, ROUTER + "?sslmode=disable", TABLE, DIRECT + "?sslmode=disable"]
    raise AssertionError(f"unknown driver {driver}")


def run_external(driver):
    import subprocess

    if ENCODING:
        # These programs speak UTF-8; the encoding runs cover libpq and psycopg.
        return
    cmd = external_command(driver)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    for line in p.stdout.splitlines():
        word, _, k = line.partition(" ")
        if word == "ACK":
            acked.append(int(k))
        elif word == "NO":
            forbidden.append(int(k))
    expect(p.returncode == 0, f"exited with {p.returncode}:\n{p.stdout}{p.stderr}")
    expect(acked, f"acknowledged no write:\n{p.stdout}{p.stderr}")


EXTERNAL = [
    "node-pg",
    "postgres-js",
    "pgjdbc-0",
    "pgjdbc-1",
    "pgjdbc-5",
    "php-pg",
    "php-pdo",
    "ruby-pg",
    "go-libpq",
    "go-pgx-cache-statement",
    "go-pgx-describe-exec",
    "go-pgx-simple-protocol",
]

DRIVERS = {
    "libpq": run_libpq,
    "psycopg-client": lambda: run_psycopg("client"),
    "psycopg-server": lambda: run_psycopg("server"),
    "psycopg-pipeline": lambda: run_psycopg("pipeline"),
    "asyncpg": lambda: run_asyncpg(100),
    "asyncpg-nocache": lambda: run_asyncpg(0),
}


def main():
    if LISTING:
        print("\n".join([*DRIVERS, *EXTERNAL]))
        return
    witness(f"DROP TABLE IF EXISTS {TABLE}")
    witness(f"CREATE TABLE {TABLE} (k int, word text)")
    if DRIVER in EXTERNAL:
        run_external(DRIVER)
    else:
        DRIVERS[DRIVER]()
    final_check()
    print(f"{DRIVER}: conformance checks passed ({len(acked)} writes)")


if __name__ == "__main__":
    main()
