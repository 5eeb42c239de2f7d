"""Nothing one client leaves on a pooled server connection reaches the next client.

    python3 pool_isolation.py ROUTER_URL

Run against a router in transaction pooling with one server connection per node and reads on
the primary, so that client B gets the very connection client A used. A stays connected (idle)
while B works. A failed check raises AssertionError; success prints one line.
"""

import sys

import psycopg
from psycopg import pq

ROUTER = sys.argv[1]


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def libpq():
    c = pq.PGconn.connect(psycopg.conninfo.make_conninfo(ROUTER).encode())
    expect(c.status == pq.ConnStatus.OK, c.error_message)
    return c


def sqlstate(r):
    return r.error_field(pq.DiagnosticField.SQLSTATE)


OK = (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK)

a = libpq()
# Session state made through functions, not SET.
r = a.exec_(b"SELECT set_config('app.tenant', '42', false)")
expect(r.status in OK, r.error_message)
# A named statement, executed (so it exists on the server connection), and the unnamed one.
expect(a.prepare(b"a_secret", b"SELECT 'secret of a'::text").status in OK, "prepare")
expect(a.exec_prepared(b"a_secret", []).get_value(0, 0) == b"secret of a", "a runs its statement")
expect(a.prepare(b"", b"SELECT 'unnamed secret of a'::text").status in OK, "prepare unnamed")
expect(a.exec_prepared(b"", []).get_value(0, 0) == b"unnamed secret of a", "a runs unnamed")
expect(a.prepare(b"", b"SELECT 'unnamed secret of a'::text").status in OK, "prepare unnamed again")

b = libpq()
r = b.exec_(b"SELECT current_setting('app.tenant', true)")
expect(r.status in OK, r.error_message)
seen = r.get_value(0, 0)
expect(seen in (None, b""), f"client B sees client A's app.tenant: {seen!r}")
r = b.exec_prepared(b"a_secret", [])
expect(
    sqlstate(r) == b"26000",
    f"client B ran client A's named statement: {r.status} {r.get_value(0, 0) if r.ntuples else r.error_message}",
)
r = b.exec_prepared(b"", [])
expect(
    sqlstate(r) == b"26000",
    f"client B ran client A's unnamed statement: {r.status} {r.get_value(0, 0) if r.ntuples else r.error_message}",
)
r = b.describe_prepared(b"a_secret")
expect(sqlstate(r) == b"26000", f"client B described client A's statement: {r.status}")

# Sequence state (currval, lastval): a serial default sets it invisibly, in a plain INSERT.
setup = libpq()
r = setup.exec_(
    b"CREATE TABLE IF NOT EXISTS pool_isolation_ids (id serial PRIMARY KEY, who text)"
)
expect(r.status in OK, r.error_message)
setup.finish()
CURRVAL = b"SELECT currval('pool_isolation_ids_id_seq')"
LASTVAL = b"SELECT lastval()"


def value_or_error(r):
    return r.get_value(0, 0) if r.ntuples else r.error_message


# C has no other session state: in a later transaction of its session it gets PostgreSQL's
# answer, its own value (nobody used the connection in between).
c = libpq()
r = c.exec_(b"INSERT INTO pool_isolation_ids(who) VALUES ('c') RETURNING id")
expect(r.status in OK, r.error_message)
c_id = r.get_value(0, 0)
for query in (CURRVAL, LASTVAL):
    r = c.exec_(query)
    expect(r.status in OK and r.get_value(0, 0) == c_id, f"client C's own {query!r}: {value_or_error(r)}")
for query in (CURRVAL, LASTVAL):
    r = b.exec_(query)
    expect(sqlstate(r) == b"55000", f"client B sees client C's sequence state with {query!r}: {value_or_error(r)}")
r = b.exec_(b"INSERT INTO pool_isolation_ids(who) VALUES ('b') RETURNING id")
expect(r.status in OK, r.error_message)
b_id = r.get_value(0, 0)
# C never sees B's value: its own or, where pgrouter cannot keep it, 55000.
for query in (CURRVAL, LASTVAL):
    r = c.exec_(query)
    expect(
        sqlstate(r) == b"55000" or (r.status in OK and r.get_value(0, 0) == c_id),
        f"client C sees client B's sequence value {b_id!r} with {query!r}: {value_or_error(r)}",
    )
c.finish()
# A has replayed session state (its connection is reset after each transaction): the same rule.
r = a.exec_(b"INSERT INTO pool_isolation_ids(who) VALUES ('a') RETURNING id")
expect(r.status in OK, r.error_message)
a_id = r.get_value(0, 0)
r = a.exec_(CURRVAL)
expect(sqlstate(r) == b"55000" or r.get_value(0, 0) == a_id, f"client A's currval: {value_or_error(r)}")

# A still has its own state.
r = a.exec_(b"SELECT current_setting('app.tenant', true)")
expect(r.get_value(0, 0) == b"42", f"client A lost its setting: {r.get_value(0, 0)!r}")
expect(a.exec_prepared(b"a_secret", []).get_value(0, 0) == b"secret of a", "a's statement")
a.finish()
b.finish()
print("pool isolation checks passed")
