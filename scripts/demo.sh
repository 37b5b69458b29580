#!/usr/bin/env bash
# End-to-end on the sample data: start a throwaway PostgreSQL, `migrate`, `run`, `run`
# again (loads nothing), `status`, and show what landed. Needs only Rust and the
# PostgreSQL server packages; leaves nothing running.
set -euo pipefail
cd "$(dirname "$0")/.."

pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$pgbin" ] || { echo "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: apt-get install postgresql" >&2; exit 1; }
psql=$(command -v psql || echo "$pgbin/psql")

cargo build --release --locked
bin=target/release/events-etl

dir=$(mktemp -d /tmp/events-etl-demo.XXXXXX)
port=$(( 20000 + RANDOM % 20000 ))
as_pg=()
if [ "$(id -u)" = 0 ]; then
  chown postgres: "$dir"      # initdb refuses to run as root
  as_pg=(runuser -u postgres --)
fi
stop() {
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap stop EXIT

"${as_pg[@]}" "$pgbin/initdb" --auth=trust -U postgres -E UTF8 --locale=C --no-sync -D "$dir/data" >/dev/null
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -o \
  "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$dir -c fsync=off" start >/dev/null

export EVENTS_ETL__WAREHOUSE__POSTGRES__URL="postgresql://postgres@127.0.0.1:$port/postgres"
export EVENTS_ETL__STAGING__URL="$dir/staging/"
q() { "$psql" -X -q -P pager=off "$EVENTS_ETL__WAREHOUSE__POSTGRES__URL" -c "$1"; }

echo "== events-etl migrate";  $bin --config config/local.toml migrate
echo "== events-etl run";      $bin --config config/local.toml run
echo "== events-etl run (again: nothing new)"; $bin --config config/local.toml run
echo "== events-etl status";   $bin --config config/local.toml status
echo "== what loaded"
q "SELECT source_key, lines, events_loaded, duplicates, rejects, blank_lines, recovered_events, invalid_ips FROM analytics.etl_files ORDER BY source_key"
q "SELECT event_name, count(*) FROM analytics.events GROUP BY 1 ORDER BY 2 DESC"
q "SELECT source_key, source_line, reason, left(raw_line, 60) AS raw_line FROM analytics.event_rejects ORDER BY source_key, source_line"
q "SELECT event_id, created_at, user_email, ip, event_name, metadata FROM analytics.events ORDER BY created_at LIMIT 5"
