# Shared by bench.sh and profile.sh (sourced, not run): the connector under test, its settings and
# its database. Callers set TARGET, PG_URL, PORT, URL and `work` (a temporary folder) first.

connector_pid=
database=

# Stops the connector and drops the benchmark's PostgreSQL database, if any.
stop_connector() {
  if [[ -n $connector_pid ]]; then
    kill "$connector_pid" 2>/dev/null || true
    wait "$connector_pid" 2>/dev/null || true
    connector_pid=
  fi
  if [[ -n $database ]]; then
    psql -q "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" || true
    database=
  fi
}

# Writes $work/bench.toml: the bench department, offline, with the Parking context preloaded.
write_bench_config() {
  cat >"$work/bench.toml" <<CONFIG
department = "bench"

[contexts]
fetch_remote = false

[contexts.preload]
"https://raw.githubusercontent.com/smart-data-models/dataModel.Parking/master/context.jsonld" = "$PWD/schemas/contexts/smart-data-models/Parking/context.jsonld"
CONFIG
}

# start_connector BACKEND LOG: a fresh store (a SQLite file, or a PostgreSQL database created for
# the run), the release connector on 127.0.0.1:$PORT, and a bounded wait until it answers.
start_connector() {
  local backend=$1 log=$2 database_url
  case $backend in
    sqlite) database_url="sqlite://$work/bench-$RANDOM.db" ;;
    postgres)
      database="civitas_bench_$$_$RANDOM"
      psql -q "$PG_URL/postgres" -c "CREATE DATABASE $database"
      database_url="$PG_URL/$database"
      ;;
    *) echo "unknown backend $backend" >&2; exit 2 ;;
  esac
  CIVITAS_LOG=warn "$TARGET/release/civitas" connector --config "$work/bench.toml" \
    --database-url "$database_url" --listen "127.0.0.1:$PORT" 2>"$log" &
  connector_pid=$!
  for _ in $(seq 100); do
    curl -fs "$URL/health" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  cat "$log" >&2
  exit 1
}
