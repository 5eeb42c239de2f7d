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

# A still has its own state.
r = a.exec_(b"SELECT current_setting('app.tenant', true)")
expect(r.get_value(0, 0) == b"42", f"client A lost its setting: {r.get_value(0, 0)!r}")
expect(a.exec_prepared(b"a_secret", []).get_value(0, 0) == b"secret of a", "a's statement")
a.finish()
b.finish()
print("pool isolation checks passed")
