// The driver conformance scenario for Go's lib/pq ("go-libpq") and pgx v4 ("go-pgx-MODE", one per
// query exec mode), built offline from Debian's packages (GOPATH mode):
//
//	go run conformance.go DRIVER URL TABLE DIRECT_URL
//
// Prints "ACK k" for every acknowledged write and "NO k" for every write that must not exist;
// tests/clients/conformance.py checks them against the primary. A failed check exits non-zero.
package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v4"
	"github.com/lib/pq"
)

var driver string

// direct reaches the primary itself, for killing a server connection of pgrouter's.
var direct string

// terminate kills a server backend from a direct connection.
func terminate(pid int) {
	db, err := sql.Open("postgres", direct)
	must(err, "open direct")
	defer db.Close()
	_, err = db.Exec("SELECT pg_terminate_backend($1)", pid)
	must(err, "terminate")
	time.Sleep(300 * time.Millisecond)
}

// setRole checks that SET ROLE follows the session; exec runs a statement, user reads
// current_user.
func setRole(exec func(string) error, user func() (string, error)) {
	must(exec("SET ROLE conformance_reader"), "set role")
	for i := 0; i < 3; i++ {
		u, err := user()
		must(err, "current_user")
		expect(u == "conformance_reader", "SET ROLE followed the session: %s", u)
	}
	must(exec("RESET ROLE"), "reset role")
}

func expect(cond bool, what string, args ...interface{}) {
	if !cond {
		fmt.Fprintf(os.Stderr, "[%s] %s\n", driver, fmt.Sprintf(what, args...))
		os.Exit(1)
	}
}

func must(err error, what string) {
	expect(err == nil, "%s: %v", what, err)
}

// libpq runs the scenario through database/sql and lib/pq (unnamed statements, each query in
// its own Parse/Bind/Execute; prepared statements named).
func libpq(url, table string) {
	db, err := sql.Open("postgres", url)
	must(err, "open")
	db.SetMaxOpenConns(1)
	var rec bool
	var v int
	for i := 0; i < 4; i++ {
		must(db.QueryRow("SELECT pg_is_in_recovery(), $1::int", i).Scan(&rec, &v), "read")
		expect(rec && v == i, "read %d on a replica", i)
		k := 900 + i
		must(db.QueryRow(fmt.Sprintf("INSERT INTO %s(k) VALUES ($1) RETURNING pg_is_in_recovery()", table), k).Scan(&rec), "write")
		expect(!rec, "write %d on the primary", k)
		fmt.Println("ACK", k)
	}
	rd, err := db.Prepare("SELECT pg_is_in_recovery(), $1::int")
	must(err, "prepare rd")
	wr, err := db.Prepare(fmt.Sprintf("INSERT INTO %s(k) VALUES ($1)", table))
	must(err, "prepare wr")
	for i := 0; i < 3; i++ {
		must(rd.QueryRow(i).Scan(&rec, &v), "named read")
		expect(v == i, "named read result")
		_, err := wr.Exec(910 + i)
		must(err, "named write")
		fmt.Println("ACK", 910+i)
	}
	tx, err := db.Begin()
	must(err, "begin")
	_, err = tx.Exec(fmt.Sprintf("INSERT INTO %s(k) VALUES ($1)", table), 920)
	must(err, "insert 920")
	_, err = tx.Exec("SAVEPOINT s")
	must(err, "savepoint")
	_, err = tx.Exec(fmt.Sprintf("INSERT INTO %s(k) VALUES ($1)", table), 921)
	must(err, "insert 921")
	_, err = tx.Exec("ROLLBACK TO SAVEPOINT s")
	must(err, "rollback to")
	must(tx.Commit(), "commit")
	fmt.Println("ACK 920\nNO 921")
	// COPY in (lib/pq's CopyIn, inside a transaction).
	tx, err = db.Begin()
	must(err, "begin")
	stmt, err := tx.Prepare(pq.CopyIn(table, "k"))
	must(err, "copy in")
	for _, k := range []int{930, 931} {
		_, err = stmt.Exec(k)
		must(err, "copy row")
	}
	_, err = stmt.Exec()
	must(err, "copy end")
	must(stmt.Close(), "copy close")
	must(tx.Commit(), "commit copy")
	fmt.Println("ACK 930\nACK 931")
	// A statement cancelled by its context: lib/pq sends a cancel request.
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	_, err = db.ExecContext(ctx, "SELECT pg_sleep(10)")
	cancel()
	expect(err != nil, "pg_sleep was not cancelled")
	must(db.QueryRow("SELECT 1").Scan(&v), "session after cancel")
	_, err = db.Exec("SELECT set_config('app.tenant', $1, false)", "gopq")
	must(err, "set_config")
	var s string
	for i := 0; i < 3; i++ {
		must(db.QueryRow("SELECT current_setting('app.tenant')").Scan(&s), "current_setting")
		expect(s == "gopq", "set_config followed the session: %q", s)
	}
	setRole(func(q string) error { _, err := db.Exec(q); return err },
		func() (string, error) { var u string; return u, db.QueryRow("SELECT current_user").Scan(&u) })
	// A temporary table, then LISTEN/NOTIFY (lib/pq listens on a connection of its own).
	_, err = db.Exec("CREATE TEMP TABLE conf_tmp (v int)")
	must(err, "temp table")
	_, err = db.Exec("INSERT INTO conf_tmp VALUES (1), (2)")
	must(err, "temp insert")
	must(db.QueryRow("SELECT sum(v)::int FROM conf_tmp").Scan(&v), "temp sum")
	expect(v == 3, "temp table sum %d", v)
	l := pq.NewListener(url, time.Second, time.Second, nil)
	must(l.Listen(table), "listen")
	_, err = db.Exec("NOTIFY " + table + ", 'gopq'")
	must(err, "notify")
	select {
	case n := <-l.Notify:
		expect(n != nil && n.Extra == "gopq", "notification %v", n)
	case <-time.After(3 * time.Second):
		expect(false, "no notification")
	}
	must(l.Close(), "unlisten")
	// The server connection killed in the middle of a transaction.
	tx, err = db.Begin()
	must(err, "begin")
	var pid int
	must(tx.QueryRow(fmt.Sprintf("INSERT INTO %s(k) VALUES ($1) RETURNING pg_backend_pid()", table), 940).Scan(&pid), "insert 940")
	fmt.Println("NO 940\nNO 941")
	terminate(pid)
	_, err = tx.Exec(fmt.Sprintf("INSERT INTO %s(k) VALUES ($1)", table), 941)
	if err == nil {
		err = tx.Commit()
	}
	expect(err != nil, "a transaction whose server connection died committed")
	_ = tx.Rollback()
	_, err = db.Exec(fmt.Sprintf("INSERT INTO %s(k) VALUES ($1)", table), 942)
	must(err, "write after the kill")
	fmt.Println("ACK 942")
}

// pgxRun runs the scenario through pgx v4 in one query exec mode.
func pgxRun(url, table, mode string, base int) {
	ctx := context.Background()
	cfg, err := pgx.ParseConfig(url)
	must(err, "config")
	switch mode {
	case "cache-statement":
		// pgx's default: a cache of named prepared statements.
	case "describe-exec":
		// No statement cache: every query is prepared on the unnamed statement, described,
		// then executed (pgx v4's equivalent of v5's describe-exec mode).
		cfg.BuildStatementCache = nil
	case "simple-protocol":
		cfg.PreferSimpleProtocol = true
	}
	c, err := pgx.ConnectConfig(ctx, cfg)
	must(err, "connect")
	var rec bool
	var v int
	for i := 0; i < 4; i++ {
		must(c.QueryRow(ctx, "SELECT pg_is_in_recovery(), $1::int", i).Scan(&rec, &v), "read")
		expect(rec && v == i, "read %d on a replica", i)
		k := base + i
		must(c.QueryRow(ctx, fmt.Sprintf("INSERT INTO %s(k) VALUES ($1) RETURNING pg_is_in_recovery()", table), k).Scan(&rec), "write")
		expect(!rec, "write %d on the primary", k)
		fmt.Println("ACK", k)
	}
	// A batch (pipelined in one round trip).
	b := &pgx.Batch{}
	for k := base + 10; k < base+13; k++ {
		b.Queue(fmt.Sprintf("INSERT INTO %s(k) VALUES ($1)", table), k)
	}
	br := c.SendBatch(ctx, b)
	for k := base + 10; k < base+13; k++ {
		_, err := br.Exec()
		must(err, "batch insert")
		fmt.Println("ACK", k)
	}
	must(br.Close(), "batch close")
	tx, err := c.Begin(ctx)
	must(err, "begin")
	_, err = tx.Exec(ctx, fmt.Sprintf("INSERT INTO %s(k) VALUES ($1)", table), base+14)
	must(err, "insert")
	must(tx.Commit(ctx), "commit")
	fmt.Println("ACK", base+14)
	tx, err = c.Begin(ctx)
	must(err, "begin")
	_, err = tx.Exec(ctx, fmt.Sprintf("INSERT INTO %s(k) VALUES ($1)", table), base+15)
	must(err, "insert")
	must(tx.Rollback(ctx), "rollback")
	fmt.Println("NO", base+15)
	// COPY in, LISTEN/NOTIFY, a temporary table, and a statement cancelled by its context.
	n, err := c.CopyFrom(ctx, pgx.Identifier{table}, []string{"k"},
		pgx.CopyFromRows([][]interface{}{{base + 17}, {base + 18}}))
	must(err, "copy from")
	expect(n == 2, "copied %d rows", n)
	fmt.Println("ACK", base+17)
	fmt.Println("ACK", base+18)
	_, err = c.Exec(ctx, "LISTEN "+table)
	must(err, "listen")
	_, err = c.Exec(ctx, "NOTIFY "+table+", 'go'")
	must(err, "notify")
	wctx, wcancel := context.WithTimeout(ctx, 3*time.Second)
	note, err := c.WaitForNotification(wctx)
	wcancel()
	must(err, "notification")
	expect(note.Payload == "go", "notification payload %q", note.Payload)
	_, err = c.Exec(ctx, "CREATE TEMP TABLE conf_tmp (v int)")
	must(err, "temp table")
	_, err = c.Exec(ctx, "INSERT INTO conf_tmp VALUES (1), (2)")
	must(err, "temp insert")
	must(c.QueryRow(ctx, "SELECT sum(v)::int FROM conf_tmp").Scan(&v), "temp sum")
	expect(v == 3, "temp table sum %d", v)
	cctx, ccancel := context.WithTimeout(ctx, 500*time.Millisecond)
	_, err = c.Exec(cctx, "SELECT pg_sleep(10)")
	ccancel()
	expect(err != nil, "pg_sleep was not cancelled")
	if c.IsClosed() {
		// pgx v4 closes its connection when a context ends a query; open a new one.
		c, err = pgx.ConnectConfig(ctx, cfg)
		must(err, "reconnect")
	}
	_, err = c.Exec(ctx, "SELECT set_config('app.tenant', $1, false)", mode)
	must(err, "set_config")
	var s string
	for i := 0; i < 3; i++ {
		must(c.QueryRow(ctx, "SELECT current_setting('app.tenant')").Scan(&s), "current_setting")
		expect(s == mode, "set_config followed the session: %q", s)
	}
	setRole(func(q string) error { _, err := c.Exec(ctx, q); return err },
		func() (string, error) { var u string; return u, c.QueryRow(ctx, "SELECT current_user").Scan(&u) })
	// COPY out.
	var out strings.Builder
	_, err = c.PgConn().CopyTo(ctx, &out, "COPY (SELECT 1 UNION ALL SELECT 2) TO STDOUT")
	must(err, "copy to")
	expect(out.String() == "1\n2\n", "COPY out: %q", out.String())
	must(c.Close(ctx), "close")
	// The server connection killed in the middle of a transaction.
	c, err = pgx.ConnectConfig(ctx, cfg)
	must(err, "connect")
	tx, err = c.Begin(ctx)
	must(err, "begin")
	var pid int
	must(tx.QueryRow(ctx, fmt.Sprintf("INSERT INTO %s(k) VALUES ($1) RETURNING pg_backend_pid()", table), base+6).Scan(&pid), "insert")
	fmt.Println("NO", base+6)
	fmt.Println("NO", base+7)
	terminate(pid)
	_, err = tx.Exec(ctx, fmt.Sprintf("INSERT INTO %s(k) VALUES ($1)", table), base+7)
	if err == nil {
		err = tx.Commit(ctx)
	}
	expect(err != nil, "a transaction whose server connection died committed")
	_ = tx.Rollback(ctx)
	if c.IsClosed() {
		c, err = pgx.ConnectConfig(ctx, cfg)
		must(err, "reconnect")
	}
	_, err = c.Exec(ctx, fmt.Sprintf("INSERT INTO %s(k) VALUES ($1)", table), base+8)
	must(err, "write after the kill")
	fmt.Println("ACK", base+8)
	must(c.Close(ctx), "close")
}

func main() {
	driver = os.Args[1]
	url, table := os.Args[2], os.Args[3]
	direct = os.Args[4]
	switch {
	case driver == "go-libpq":
		libpq(url, table)
	case strings.HasPrefix(driver, "go-pgx-"):
		mode := strings.TrimPrefix(driver, "go-pgx-")
		base := map[string]int{"cache-statement": 950, "describe-exec": 970, "simple-protocol": 990}[mode]
		expect(base != 0, "unknown pgx mode %s", mode)
		pgxRun(url, table, mode, base)
	default:
		expect(false, "unknown driver")
	}
}
