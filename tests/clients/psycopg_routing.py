"""Routing observed through psycopg 3 (libpq, extended protocol with server-side binding).

Run by tests/integration/clients.rs with the router's URL and the cluster's primary port.
Every check prints nothing on success; a failed check raises AssertionError.
"""

import sys

import psycopg

url, primary_port = sys.argv[1], int(sys.argv[2])
WHERE = "inet_server_port(), pg_is_in_recovery()"


def where(cur, sql, params=None, prepare=None):
    cur.execute(sql, params, prepare=prepare)
    port, in_recovery = cur.fetchone()[:2]
    assert (port == primary_port) != in_recovery, (sql, port, in_recovery)
    return "replica" if in_recovery else "primary"


with psycopg.connect(url, autocommit=True) as conn:
    cur = conn.cursor()
    # Server-side parameters (extended protocol) and psycopg's automatic prepared statements.
    for _ in range(8):
        assert where(cur, f"SELECT {WHERE}, %s::int", (1,)) == "replica"
        assert where(cur, f"SELECT {WHERE}, %s::int", (2,), prepare=True) == "replica"
    assert where(cur, f"SELECT {WHERE}, nextval('routing_seq')") == "primary"
    assert where(cur, f"INSERT INTO routing_t (v) VALUES (%s) RETURNING {WHERE}", (7,)) == "primary"
    assert where(cur, f"/* pgrouter: primary */ SELECT {WHERE}") == "primary"

    # Transactions: psycopg's own transaction blocks.
    conn.autocommit = False
    assert where(cur, f"SELECT {WHERE}") == "primary"
    conn.commit()
    conn.read_only = True
    assert where(cur, f"SELECT {WHERE}") == "replica"
    conn.commit()
    conn.read_only = None
    conn.autocommit = True

    # Session state follows the session.
    cur.execute("SET statement_timeout = '3456ms'")
    cur.execute(f"SELECT {WHERE}, current_setting('statement_timeout')")
    row = cur.fetchone()
    assert row[1] is True and row[2] == "3456ms", row

print("psycopg routing checks passed")
