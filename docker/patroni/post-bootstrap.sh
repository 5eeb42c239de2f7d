#!/bin/sh
# Run once by Patroni on the new cluster's primary: the roles pgrouter and the demo use.
set -eu
psql -v ON_ERROR_STOP=1 -d postgres <<'SQL'
CREATE ROLE app LOGIN PASSWORD 'app';
GRANT pg_monitor TO app;
CREATE DATABASE app OWNER app;
SQL
