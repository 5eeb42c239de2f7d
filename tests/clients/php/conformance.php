<?php
// The driver conformance scenario for PHP's pg_* functions ("php-pg") and PDO ("php-pdo").
//   php conformance.php DRIVER HOST PORT TABLE
// Prints "ACK k" for every acknowledged write and "NO k" for every write that must not exist;
// tests/clients/conformance.py checks them against the primary. A failed check exits non-zero.
[$_, $driver, $host, $port, $table] = $argv;

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
    $set = $pdo->prepare("SELECT set_config('app.tenant', ?, false)");
    $set->execute(['pdo']);
    for ($i = 0; $i < 3; $i++) {
        $v = $pdo->query("SELECT current_setting('app.tenant')")->fetchColumn();
        expect($v === 'pdo', "set_config followed the session: $v");
    }
}
