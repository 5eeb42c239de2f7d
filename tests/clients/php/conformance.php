<?php
// The driver conformance scenario for PHP's pg_* functions ("php-pg") and PDO ("php-pdo").
//   php conformance.php DRIVER HOST PORT TABLE DIRECT_URL
// Prints "ACK k" for every acknowledged write and "NO k" for every write that must not exist;
// tests/clients/conformance.py checks them against the primary. A failed check exits non-zero.
[$_, $driver, $host, $port, $table, $direct] = $argv;

// libpq key=value connection string from a postgres:// URL.
function direct_conninfo($url) {
    $u = parse_url($url);
    return sprintf('host=%s port=%d dbname=%s user=%s password=%s', $u['host'], $u['port'], ltrim($u['path'], '/'), $u['user'], $u['pass']);
}

function expect($cond, $what) {
    global $driver;
    if (!$cond) {
        fwrite(STDERR, "[$driver] $what\n");
        exit(1);
    }
}

if ($driver === 'php-pg') {
    $c = pg_connect("host=$host port=$port dbname=app user=app password=app");
    expect($c !== false, 'connect');
    // pg_prepare/pg_execute on the unnamed statement in separate round trips.
    for ($i = 0; $i < 4; $i++) {
        expect(pg_prepare($c, '', 'SELECT pg_is_in_recovery(), $1::int AS x') !== false, 'prepare read');
        $r = pg_fetch_row(pg_execute($c, '', [$i]));
        expect($r[0] === 't' && $r[1] === (string)$i, "unnamed read $i");
        $k = 700 + $i;
        expect(pg_prepare($c, '', "INSERT INTO $table(k) VALUES (\$1::int) RETURNING pg_is_in_recovery()") !== false, 'prepare write');
        $r = pg_fetch_row(pg_execute($c, '', [$k]));
        expect($r[0] === 'f', "unnamed write $k ran on the primary");
        echo "ACK $k\n";
    }
    // Named statements.
    pg_prepare($c, 'rd', 'SELECT pg_is_in_recovery(), $1::int');
    pg_prepare($c, 'wr', "INSERT INTO $table(k) VALUES (\$1::int)");
    for ($i = 0; $i < 3; $i++) {
        $r = pg_fetch_row(pg_execute($c, 'rd', [$i]));
        expect($r[1] === (string)$i, 'named read');
        expect(pg_execute($c, 'wr', [710 + $i]) !== false, 'named write');
        echo "ACK " . (710 + $i) . "\n";
    }
    // pg_query_params (the unnamed statement in one round trip) in a transaction.
    pg_query($c, 'BEGIN');
    pg_query_params($c, "INSERT INTO $table(k) VALUES (\$1)", [720]);
    pg_query($c, 'SAVEPOINT s');
    pg_query_params($c, "INSERT INTO $table(k) VALUES (\$1)", [721]);
    pg_query($c, 'ROLLBACK TO SAVEPOINT s');
    pg_query($c, 'COMMIT');
    echo "ACK 720\nNO 721\n";
    // COPY in and out, LISTEN/NOTIFY, a temporary table.
    expect(pg_copy_from($c, "$table(k)", ["730", "731"]), 'COPY in');
    echo "ACK 730\nACK 731\n";
    $rows = pg_copy_to($c, "(SELECT 1 UNION ALL SELECT 2)");
    expect($rows === ["1\n", "2\n"], 'COPY out: ' . json_encode($rows));
    pg_query($c, "LISTEN $table");
    pg_query($c, "NOTIFY $table, 'php'");
    $note = pg_get_notify($c, PGSQL_ASSOC);
    expect($note !== false && $note['payload'] === 'php', 'notification: ' . json_encode($note));
    pg_query($c, 'CREATE TEMP TABLE conf_tmp (v int)');
    pg_query($c, 'INSERT INTO conf_tmp VALUES (1), (2)');
    expect(pg_fetch_row(pg_query($c, 'SELECT sum(v) FROM conf_tmp'))[0] === '3', 'temp table');
    // A statement cancelled while it runs (sent asynchronously, then cancelled).
    pg_send_query($c, 'SELECT pg_sleep(10)');
    usleep(300000);
    expect(pg_cancel_query($c), 'cancel');
    pg_query($c, 'SELECT 1');
    pg_query($c, "SELECT set_config('app.tenant', 'php', false)");
    for ($i = 0; $i < 3; $i++) {
        $r = pg_fetch_row(pg_query($c, "SELECT current_setting('app.tenant')"));
        expect($r[0] === 'php', 'set_config followed the session');
    }
    // SET ROLE is session state too.
    pg_query($c, 'SET ROLE conformance_reader');
    for ($i = 0; $i < 3; $i++) {
        expect(pg_fetch_row(pg_query($c, 'SELECT current_user'))[0] === 'conformance_reader', 'SET ROLE followed the session');
    }
    pg_query($c, 'RESET ROLE');
    expect(pg_fetch_row(pg_query($c, 'SELECT current_user'))[0] === 'app', 'RESET ROLE');
    pg_close($c);
    // The server connection killed in the middle of a transaction: the transaction fails with
    // an error, nothing of it is kept, and the client can go on.
    $c = pg_connect("host=$host port=$port dbname=app user=app password=app");
    pg_query($c, 'BEGIN');
    $pid = pg_fetch_row(pg_query_params($c, "INSERT INTO $table(k) VALUES (\$1) RETURNING pg_backend_pid()", [740]))[0];
    echo "NO 740\nNO 741\n";
    $d = pg_connect(direct_conninfo($direct));
    pg_query_params($d, 'SELECT pg_terminate_backend($1)', [$pid]);
    pg_close($d);
    usleep(300000);
    $r = @pg_query_params($c, "INSERT INTO $table(k) VALUES (\$1)", [741]);
    expect($r === false, 'a transaction whose server connection died went on');
    @pg_query($c, 'ROLLBACK');
    if (pg_connection_status($c) !== PGSQL_CONNECTION_OK) {
        $c = pg_connect("host=$host port=$port dbname=app user=app password=app");
    }
    expect(pg_query_params($c, "INSERT INTO $table(k) VALUES (\$1)", [742]) !== false, 'write after the kill');
    echo "ACK 742\n";
    pg_close($c);
} else {
    $pdo = new PDO("pgsql:host=$host;port=$port;dbname=app", 'app', 'app', [
        PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION,
        PDO::ATTR_EMULATE_PREPARES => false,
    ]);
    $rd = $pdo->prepare('SELECT pg_is_in_recovery() AS rec, CAST(? AS int) AS v');
    $wr = $pdo->prepare("INSERT INTO $table(k) VALUES (?) RETURNING pg_is_in_recovery() AS rec");
    for ($i = 0; $i < 4; $i++) {
        $rd->execute([$i]);
        $r = $rd->fetch(PDO::FETCH_ASSOC);
        expect($r['rec'] === true && $r['v'] === $i, "read $i");
        $wr->execute([750 + $i]);
        expect($wr->fetch(PDO::FETCH_ASSOC)['rec'] === false, 'write on the primary');
        echo "ACK " . (750 + $i) . "\n";
    }
    $pdo->beginTransaction();
    $pdo->prepare("INSERT INTO $table(k) VALUES (?)")->execute([760]);
    $pdo->commit();
    echo "ACK 760\n";
    $pdo->beginTransaction();
    $pdo->prepare("INSERT INTO $table(k) VALUES (?)")->execute([761]);
    $pdo->rollBack();
    echo "NO 761\n";
    // A savepoint rolled back.
    $pdo->beginTransaction();
    $pdo->prepare("INSERT INTO $table(k) VALUES (?)")->execute([762]);
    $pdo->exec('SAVEPOINT s');
    $pdo->prepare("INSERT INTO $table(k) VALUES (?)")->execute([763]);
    $pdo->exec('ROLLBACK TO SAVEPOINT s');
    $pdo->commit();
    echo "ACK 762\nNO 763\n";
    // lastInsertId() reads lastval() in a transaction of its own, after the INSERT's: the
    // session gets its connection back (nobody else used it) with its sequence state.
    $pdo->exec("CREATE TABLE IF NOT EXISTS {$table}_ids (id serial PRIMARY KEY)");
    $id = $pdo->query("INSERT INTO {$table}_ids DEFAULT VALUES RETURNING id")->fetchColumn();
    expect($pdo->lastInsertId() === (string)$id, 'lastInsertId: ' . $pdo->lastInsertId() . " for $id");
    $set = $pdo->prepare("SELECT set_config('app.tenant', ?, false)");
    $set->execute(['pdo']);
    for ($i = 0; $i < 3; $i++) {
        $v = $pdo->query("SELECT current_setting('app.tenant')")->fetchColumn();
        expect($v === 'pdo', "set_config followed the session: $v");
    }
    // COPY in and out, LISTEN/NOTIFY.
    expect($pdo->pgsqlCopyFromArray($table, ["764", "765"], "\t", "\\N", 'k'), 'COPY in');
    echo "ACK 764\nACK 765\n";
    $rows = $pdo->pgsqlCopyToArray('(SELECT 1 UNION ALL SELECT 2)');
    expect($rows === ["1\n", "2\n"], 'COPY out: ' . json_encode($rows));
    $pdo->exec("LISTEN $table");
    $pdo->exec("NOTIFY $table, 'pdo'");
    $note = $pdo->pgsqlGetNotify(PDO::FETCH_ASSOC, 3000);
    expect($note !== false && $note['payload'] === 'pdo', 'notification: ' . json_encode($note));
    // SET ROLE.
    $pdo->exec('SET ROLE conformance_reader');
    for ($i = 0; $i < 3; $i++) {
        expect($pdo->query('SELECT current_user')->fetchColumn() === 'conformance_reader', 'SET ROLE followed the session');
    }
    $pdo->exec('RESET ROLE');
    expect($pdo->query('SELECT current_user')->fetchColumn() === 'app', 'RESET ROLE');
}
