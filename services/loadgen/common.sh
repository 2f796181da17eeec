# Shared by bench.sh and profile.sh (sourced, not run): the connector under test, its settings, its
# key and tokens, and its database. Callers set TARGET, PG_URL, PORT, URL and `work` (a temporary
# folder) first, and build the release binaries before calling anything here. CIVITAS_BIN, if set,
# is the connector binary to run instead of $TARGET/release/civitas (e.g. a build of another
# revision); keys and tokens are always made with $TARGET/release/civitas.

connector_pid=
database=
database_url=
bench_public_key=

# The Smart Data Models ParkingSpot type, as the connector stores it (expanded).
PARKING_SPOT=https://smartdatamodels.org/dataModel.Parking/ParkingSpot
PARKING_CONTEXT_FILE="$PWD/schemas/contexts/smart-data-models/Parking/context.jsonld"

# cpu_by_thread PID: one line per thread of the process: its id, its name (spaces as _), and
# its user + system time in clock ticks (`getconf CLK_TCK` per second), from /proc.
cpu_by_thread() {
  local task
  for task in /proc/"$1"/task/*; do
    echo "$(basename "$task") $(tr ' ' '_' <"$task/comm") $(awk '{ print $14 + $15 }' "$task/stat")"
  done
}

# Stops the connector process, keeping its database.
stop_server() {
  if [[ -n $connector_pid ]]; then
    kill "$connector_pid" 2>/dev/null || true
    wait "$connector_pid" 2>/dev/null || true
    connector_pid=
  fi
}

# Stops the connector and drops the benchmark's PostgreSQL database, if any.
stop_connector() {
  stop_server
  if [[ -n $database ]]; then
    psql -q "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" || true
    database=
  fi
}

# The department's root key, $work/bench.key (made on first use with `civitas keygen`, which
# prints the public half, kept in $work/bench.pub); its public half (ed25519/<hex>) in
# bench_public_key. Files, not only a variable, so that calls in subshells see the same key.
ensure_bench_key() {
  if [[ ! -f $work/bench.key ]]; then
    "$TARGET/release/civitas" keygen --out "$work/bench.key" >"$work/bench.pub"
  fi
  bench_public_key=$(<"$work/bench.pub")
}

# bench_token ARGS…: prints a token of the bench key for `civitas token issue` ARGS (--holder,
# --read, --write, --attrs…), valid for a day.
bench_token() {
  ensure_bench_key
  "$TARGET/release/civitas" token issue --key "$work/bench.key" --ttl 1d "$@"
}

# write_bench_config [ACCESS]: writes $work/bench.toml, the bench department, offline, with the
# Parking context preloaded and authorization enforced: tokens of $work/bench.key, and the policy
# folder $work/policies-ACCESS (next to bench.toml) whose access.toml says what requests without a
# token may do. ACCESS is `anonymous` (the default: they may read and write every type, so that
# loadgen runs without --auth work) or `tokens` (nothing: every request needs a token).
write_bench_config() {
  local access=${1:-anonymous}
  ensure_bench_key
  mkdir -p "$work/policies-$access"
  case $access in
    anonymous)
      printf '# Benchmark only: requests without a token may read and write every type.\n[anonymous]\nread = ["*"]\nwrite = ["*"]\n' \
        >"$work/policies-$access/access.toml"
      ;;
    tokens)
      printf '# No access without a token.\n[anonymous]\nread = []\n' >"$work/policies-$access/access.toml"
      ;;
    *) echo "unknown access $access" >&2; exit 2 ;;
  esac
  cat >"$work/bench.toml" <<CONFIG
department = "bench"

[contexts]
fetch_remote = false

[contexts.preload]
"https://raw.githubusercontent.com/smart-data-models/dataModel.Parking/master/context.jsonld" = "$PARKING_CONTEXT_FILE"

[auth]
public_key = "$bench_public_key"
policies = "policies-$access"
CONFIG
}

# create_database BACKEND: a fresh store (a SQLite file, or a PostgreSQL database created for the
# run) in database_url.
create_database() {
  case $1 in
    sqlite) database_url="sqlite://$work/bench-$RANDOM.db" ;;
    postgres)
      database="civitas_bench_$$_$RANDOM"
      psql -q "$PG_URL/postgres" -c "CREATE DATABASE $database"
      database_url="$PG_URL/$database"
      ;;
    *) echo "unknown backend $1" >&2; exit 2 ;;
  esac
}

# start_connector BACKEND LOG: a fresh store and the connector on it (launch_connector).
start_connector() {
  create_database "$1"
  launch_connector "$2"
}

# launch_connector LOG [SECONDS] [LEVEL]: the release connector with $work/bench.toml on
# database_url (kept from an earlier run, if any) at 127.0.0.1:$PORT, logging at LEVEL (default
# warn) to LOG, and a wait of at most SECONDS (default 10) until it answers.
launch_connector() {
  local log=$1 seconds=${2:-10} level=${3:-warn}
  CIVITAS_LOG=$level "${CIVITAS_BIN:-$TARGET/release/civitas}" connector --config "$work/bench.toml" \
    --database-url "$database_url" --listen "127.0.0.1:$PORT" 2>>"$log" &
  connector_pid=$!
  for _ in $(seq $((seconds * 10))); do
    curl -fs "$URL/health" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  cat "$log" >&2
  exit 1
}
