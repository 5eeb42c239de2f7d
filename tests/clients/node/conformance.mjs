// The driver conformance scenario for node-postgres ("node-pg") and postgres.js ("postgres-js").
//   node conformance.mjs DRIVER URL TABLE DIRECT_URL
// Prints "ACK k" for every acknowledged write and "NO k" for every write that must not exist;
// tests/clients/conformance.py checks them against the primary. Any failed check throws.
import pg from "pg";
import postgres from "postgres";
import copyStreams from "pg-copy-streams";
import { pipeline } from "node:stream/promises";
import { Readable, Writable } from "node:stream";

const [driver, url, table, direct] = process.argv.slice(2);
const ack = (k) => console.log(`ACK ${k}`);
const no = (k) => console.log(`NO ${k}`);
function expect(cond, what) {
  if (!cond) throw new Error(`[${driver}] ${what}`);
}

async function nodePg() {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  // Unnamed statements, one round trip each: a read lands on a replica, a write on the primary.
  for (let i = 0; i < 4; i++) {
    const r = await c.query("SELECT pg_is_in_recovery() AS rec, $1::int AS v", [i]);
    expect(r.rows[0].rec === true && r.rows[0].v === i, `read ${i}: ${JSON.stringify(r.rows)}`);
    const w = await c.query(`INSERT INTO ${table}(k) VALUES ($1) RETURNING pg_is_in_recovery() AS rec`, [400 + i]);
    expect(w.rows[0].rec === false, "write on the primary");
    ack(400 + i);
  }
  // Named statements, prepared once, run across round trips, read and write alternating.
  for (let i = 0; i < 3; i++) {
    const r = await c.query({ name: "rd", text: "SELECT pg_is_in_recovery() AS rec, $1::int AS v", values: [i] });
    expect(r.rows[0].v === i, "named read");
    await c.query({ name: "wr", text: `INSERT INTO ${table}(k) VALUES ($1)`, values: [410 + i] });
    ack(410 + i);
  }
  // A transaction with a savepoint rolled back.
  await c.query("BEGIN");
  await c.query(`INSERT INTO ${table}(k) VALUES ($1)`, [420]);
  await c.query("SAVEPOINT s");
  await c.query(`INSERT INTO ${table}(k) VALUES ($1)`, [421]);
  await c.query("ROLLBACK TO SAVEPOINT s");
  await c.query("COMMIT");
  ack(420);
  no(421);
  // A failed transaction leaves nothing.
  await c.query("BEGIN");
  await c.query(`INSERT INTO ${table}(k) VALUES (422)`);
  await c.query("SELECT 1/0").catch(() => {});
  await c.query("ROLLBACK");
  no(422);
  // Pipelined queries (node-pg queues them on one connection).
  await Promise.all([430, 431, 432].map((k) => c.query(`INSERT INTO ${table}(k) VALUES ($1)`, [k])));
  [430, 431, 432].forEach(ack);
  // Session state: SET and set_config follow the session to the replicas.
  await c.query("SET statement_timeout = '4321ms'");
  await c.query("SELECT set_config('app.tenant', 'n1', false)");
  for (let i = 0; i < 3; i++) {
    const r = await c.query("SELECT current_setting('statement_timeout') AS t, current_setting('app.tenant') AS a");
    expect(r.rows[0].t === "4321ms" && r.rows[0].a === "n1", `settings ${JSON.stringify(r.rows)}`);
  }
  // SET ROLE is session state too.
  await c.query("SET ROLE conformance_reader");
  for (let i = 0; i < 3; i++) {
    const r = await c.query("SELECT current_user AS u");
    expect(r.rows[0].u === "conformance_reader", "SET ROLE followed the session");
  }
  await c.query("RESET ROLE");
  expect((await c.query("SELECT current_user AS u")).rows[0].u === "app", "RESET ROLE");
  // COPY in and out (pg-copy-streams).
  await pipeline(Readable.from(["433\n434\n"]), c.query(copyStreams.from(`COPY ${table} (k) FROM STDIN`)));
  ack(433);
  ack(434);
  let out = "";
  await pipeline(
    c.query(copyStreams.to("COPY (SELECT 1 UNION ALL SELECT 2) TO STDOUT")),
    new Writable({
      write(chunk, _enc, done) {
        out += chunk;
        done();
      },
    })
  );
  expect(out === "1\n2\n", `COPY out: ${JSON.stringify(out)}`);
  // A statement cancelled while it runs (node-postgres sends the cancel request from a second
  // client object).
  const sleeping = new pg.Query("SELECT pg_sleep(10)");
  const done = new Promise((resolve) => {
    sleeping.on("error", (e) => resolve(e.code));
    sleeping.on("end", () => resolve(null));
  });
  c.query(sleeping);
  await new Promise((r) => setTimeout(r, 500));
  new pg.Client({ connectionString: url }).cancel(c, sleeping);
  const code = await done;
  expect(code === "57014", `cancel: ${code}`);
  expect((await c.query("SELECT 1 AS one")).rows[0].one === 1, "session after cancel");
  // LISTEN/NOTIFY.
  const got = new Promise((resolve) => c.on("notification", (n) => resolve(n.payload)));
  await c.query(`LISTEN ${table}`);
  await c.query(`NOTIFY ${table}, 'hey'`);
  expect((await got) === "hey", "notification");
  // A temporary table (pins the session to its primary connection).
  await c.query("CREATE TEMP TABLE conf_tmp (v int)");
  await c.query("INSERT INTO conf_tmp VALUES (1), (2)");
  const s = await c.query("SELECT sum(v)::int AS s FROM conf_tmp");
  expect(s.rows[0].s === 3, "temp table");
  await c.end();
  // The server connection killed in the middle of a transaction.
  const k = new pg.Client({ connectionString: url });
  k.on("error", () => {});
  await k.connect();
  await killMidTransaction(
    async (sql, params) => (await k.query(sql, params)).rows,
    440
  );
  await k.end().catch(() => {});
}

// Kills the server connection of an open transaction (from a direct connection): the next
// statement fails with an error, nothing of the transaction is kept, the client goes on (or,
// where its driver gave up the connection, a new one does). `run(sql, params)` returns rows.
async function killMidTransaction(run, base) {
  await run("BEGIN");
  const [{ pid }] = await run(`INSERT INTO ${table}(k) VALUES ($1) RETURNING pg_backend_pid() AS pid`, [base]);
  no(base);
  no(base + 1);
  const d = new pg.Client({ connectionString: direct });
  await d.connect();
  await d.query("SELECT pg_terminate_backend($1)", [pid]);
  await d.end();
  await new Promise((r) => setTimeout(r, 300));
  const failed = await run(`INSERT INTO ${table}(k) VALUES ($1)`, [base + 1]).then(
    () => false,
    () => true
  );
  expect(failed, "a statement of a transaction whose server connection died succeeded");
  await run("ROLLBACK").catch(() => {});
  let again = run;
  const alive = await run("SELECT 1").then(
    () => true,
    () => false
  );
  if (!alive) {
    const fresh = new pg.Client({ connectionString: url });
    await fresh.connect();
    again = async (sql, params) => (await fresh.query(sql, params)).rows;
  }
  await again(`INSERT INTO ${table}(k) VALUES ($1)`, [base + 2]);
  ack(base + 2);
}

async function postgresJs() {
  // Default settings: named prepared statements, pipelining.
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  for (let i = 0; i < 4; i++) {
    const [r] = await sql`SELECT pg_is_in_recovery() AS rec, ${i}::int AS v`;
    expect(r.rec === true && r.v === i, `read ${i}: ${JSON.stringify(r)}`);
    const [w] = await sql`INSERT INTO ${sql(table)} (k) VALUES (${500 + i}) RETURNING pg_is_in_recovery() AS rec`;
    expect(w.rec === false, "write on the primary");
    ack(500 + i);
  }
  await Promise.all([510, 511, 512].map((k) => sql`INSERT INTO ${sql(table)} (k) VALUES (${k})`));
  [510, 511, 512].forEach(ack);
  await sql.begin(async (tx) => {
    await tx`INSERT INTO ${tx(table)} (k) VALUES (520)`;
    await tx
      .savepoint(async (sp) => {
        await sp`INSERT INTO ${sp(table)} (k) VALUES (521)`;
        throw new Error("roll back the savepoint");
      })
      .catch(() => {});
  });
  ack(520);
  no(521);
  await sql
    .begin(async (tx) => {
      await tx`INSERT INTO ${tx(table)} (k) VALUES (522)`;
      await tx`SELECT 1/0`;
    })
    .catch(() => {});
  no(522);
  // A statement cancelled while it runs (postgres.js sends a cancel request).
  const sleeping = sql`SELECT pg_sleep(10)`;
  setTimeout(() => sleeping.cancel(), 500);
  const cancelled = await sleeping.then(
    () => null,
    (e) => e.code
  );
  expect(cancelled === "57014", `cancel: ${cancelled}`);
  const [one] = await sql`SELECT 1 AS one`;
  expect(one.one === 1, "session after cancel");
  // COPY in through a writable stream.
  const { pipeline } = await import("node:stream/promises");
  const { Readable } = await import("node:stream");
  await pipeline(Readable.from(["530\n531\n"]), await sql`COPY ${sql(table)} (k) FROM STDIN`.writable());
  ack(530);
  ack(531);
  // COPY out.
  let out = "";
  await pipeline(
    await sql`COPY (SELECT 1 UNION ALL SELECT 2) TO STDOUT`.readable(),
    new Writable({
      write(chunk, _enc, done) {
        out += chunk;
        done();
      },
    })
  );
  expect(out === "1\n2\n", `COPY out: ${JSON.stringify(out)}`);
  // SET ROLE.
  await sql`SET ROLE conformance_reader`;
  for (let i = 0; i < 3; i++) {
    const [r] = await sql`SELECT current_user AS u`;
    expect(r.u === "conformance_reader", "SET ROLE followed the session");
  }
  await sql`RESET ROLE`;
  await sql`SELECT set_config('app.tenant', 'pj', false)`;
  for (let i = 0; i < 3; i++) {
    const [r] = await sql`SELECT current_setting('app.tenant') AS a`;
    expect(r.a === "pj", `set_config followed the session: ${JSON.stringify(r)}`);
  }
  // LISTEN/NOTIFY (postgres.js listens on a connection of its own).
  const got = new Promise((resolve) => sql.listen(table, (payload) => resolve(payload)));
  await new Promise((r) => setTimeout(r, 200));
  await sql.notify(table, "pj");
  expect((await got) === "pj", "notification");
  // A temporary table.
  await sql`CREATE TEMP TABLE conf_tmp (v int)`;
  await sql`INSERT INTO conf_tmp VALUES (1), (2)`;
  const [t] = await sql`SELECT sum(v)::int AS s FROM conf_tmp`;
  expect(t.s === 3, "temp table");
  await sql.end();
  // The server connection killed in the middle of a transaction.
  const k = postgres(url, { max: 1, onnotice: () => {} });
  await killMidTransaction((text, params) => k.unsafe(text, params ?? []), 540);
  await k.end();
}

const run = { "node-pg": nodePg, "postgres-js": postgresJs }[driver];
expect(run, `unknown driver ${driver}`);
await run();
