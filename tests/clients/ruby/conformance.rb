# The driver conformance scenario for Ruby's pg (libpq):
#   ruby conformance.rb HOST PORT TABLE DIRECT_URL
# Prints "ACK k" for every acknowledged write and "NO k" for every write that must not exist;
# tests/clients/conformance.py checks them against the primary. A failed check exits non-zero.
require 'pg'

host, port, table, direct = ARGV

def expect(cond, what)
  abort("[ruby-pg] #{what}") unless cond
end

c = PG.connect(host: host, port: port.to_i, dbname: 'app', user: 'app', password: 'app')
# The unnamed statement in separate round trips (prepare, then exec_prepared).
4.times do |i|
  c.prepare('', 'SELECT pg_is_in_recovery(), $1::int AS x')
  r = c.exec_prepared('', [i])
  expect(r.getvalue(0, 0) == 't' && r.getvalue(0, 1) == i.to_s, "unnamed read #{i}")
  k = 800 + i
  c.prepare('', "INSERT INTO #{table}(k) VALUES ($1::int) RETURNING pg_is_in_recovery()")
  r = c.exec_prepared('', [k])
  expect(r.cmd_status.start_with?('INSERT') && r.getvalue(0, 0) == 'f', "unnamed write #{k}")
  puts "ACK #{k}"
end
c.prepare('rd', 'SELECT pg_is_in_recovery(), $1::int')
c.prepare('wr', "INSERT INTO #{table}(k) VALUES ($1::int)")
3.times do |i|
  expect(c.exec_prepared('rd', [i]).getvalue(0, 1) == i.to_s, 'named read')
  c.exec_prepared('wr', [810 + i])
  puts "ACK #{810 + i}"
end
c.transaction do |t|
  t.exec_params("INSERT INTO #{table}(k) VALUES ($1)", [820])
  t.exec('SAVEPOINT s')
  t.exec_params("INSERT INTO #{table}(k) VALUES ($1)", [821])
  t.exec('ROLLBACK TO SAVEPOINT s')
end
puts 'ACK 820', 'NO 821'
begin
  c.transaction do |t|
    t.exec_params("INSERT INTO #{table}(k) VALUES ($1)", [822])
    t.exec('SELECT 1/0')
  end
rescue PG::DivisionByZero
end
puts 'NO 822'
# COPY in and out.
c.copy_data("COPY #{table}(k) FROM STDIN") do
  c.put_copy_data("830\n831\n")
end
puts 'ACK 830', 'ACK 831'
out = +''
c.copy_data('COPY (SELECT 1 UNION ALL SELECT 2) TO STDOUT') do
  while (row = c.get_copy_data)
    out << row
  end
end
expect(out == "1\n2\n", "COPY out: #{out.inspect}")
# LISTEN/NOTIFY, a temporary table, and a statement cancelled while it runs.
c.exec("LISTEN #{table}")
c.exec("NOTIFY #{table}, 'rb'")
got = nil
c.wait_for_notify(3) { |_channel, _pid, payload| got = payload }
expect(got == 'rb', "notification: #{got.inspect}")
c.exec('CREATE TEMP TABLE conf_tmp (v int)')
c.exec('INSERT INTO conf_tmp VALUES (1), (2)')
expect(c.exec('SELECT sum(v) FROM conf_tmp').getvalue(0, 0) == '3', 'temp table')
canceller = Thread.new do
  sleep 0.5
  c.cancel
end
begin
  c.exec('SELECT pg_sleep(10)')
  expect(false, 'pg_sleep was not cancelled')
rescue PG::QueryCanceled
end
canceller.join
expect(c.exec('SELECT 1').getvalue(0, 0) == '1', 'session after cancel')
c.exec_params("SELECT set_config('app.tenant', $1, false)", ['rb'])
3.times do
  expect(c.exec("SELECT current_setting('app.tenant')").getvalue(0, 0) == 'rb', 'set_config followed the session')
end
# SET ROLE is session state too.
c.exec('SET ROLE conformance_reader')
3.times { expect(c.exec('SELECT current_user').getvalue(0, 0) == 'conformance_reader', 'SET ROLE followed the session') }
c.exec('RESET ROLE')
expect(c.exec('SELECT current_user').getvalue(0, 0) == 'app', 'RESET ROLE')
c.close

# The server connection killed in the middle of a transaction: the transaction fails with an
# error, nothing of it is kept, and the client can go on.
c = PG.connect(host: host, port: port.to_i, dbname: 'app', user: 'app', password: 'app')
c.exec('BEGIN')
pid = c.exec_params("INSERT INTO #{table}(k) VALUES ($1) RETURNING pg_backend_pid()", [840]).getvalue(0, 0)
puts 'NO 840', 'NO 841'
PG.connect(direct) { |d| d.exec_params('SELECT pg_terminate_backend($1)', [pid]) }
sleep 0.3
begin
  c.exec_params("INSERT INTO #{table}(k) VALUES ($1)", [841])
  c.exec('COMMIT')
  expect(false, 'a transaction whose server connection died committed')
rescue PG::Error
end
begin
  c.exec('ROLLBACK')
rescue PG::Error
end
c = PG.connect(host: host, port: port.to_i, dbname: 'app', user: 'app', password: 'app') if c.status != PG::CONNECTION_OK
c.exec_params("INSERT INTO #{table}(k) VALUES ($1)", [842])
puts 'ACK 842'
c.close
