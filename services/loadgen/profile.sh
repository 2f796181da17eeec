#!/usr/bin/env bash
# "Where the time goes" of BENCHMARKS.md: profiles a release connector under retrieve and under batch
# upsert load with `perf record` (cpu-clock sampling, DWARF call graphs; the release profile keeps
# line tables) and buckets the samples with perf_stages.py. Loopback only, bounded in time.
#
#   services/loadgen/profile.sh                     # SQLite
#   BACKEND=postgres services/loadgen/profile.sh    # PostgreSQL (a database created and dropped)
#   PROFILES=retrieve services/loadgen/profile.sh   # only some of the profiles (retrieve, batch)
#   NO_BUILD=1 CIVITAS_BIN=/path/civitas …          # profile another connector binary as it is
#
# Needs `perf` (Debian: linux-perf). Reports land in $OUT (default: a fresh /tmp/civitas-profile.*).
# Needs curl, and psql for PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/../.."

TARGET=${CARGO_TARGET_DIR:-target}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
PORT=${PORT:-9193}
BACKEND=${BACKEND:-sqlite}
WINDOW=${WINDOW:-10}
PROFILES=${PROFILES:-retrieve batch}
OUT=${OUT:-$(mktemp -d /tmp/civitas-profile.XXXXXX)}
mkdir -p "$OUT"

URL="http://127.0.0.1:$PORT"
LOADGEN="$TARGET/release/civitas-loadgen"
STAGES="$PWD/services/loadgen/perf_stages.py"
work=$(mktemp -d /tmp/civitas-profile-db.XXXXXX)
# shellcheck source=services/loadgen/common.sh
source "$(dirname "$0")/common.sh"
trap 'stop_connector; rm -rf "$work"' EXIT

[[ -n ${NO_BUILD:-} ]] || cargo build --release -p civitas -p civitas-loadgen

write_bench_config

start_connector "$BACKEND" "$OUT/connector.log"

echo "populating 100000 entities"
"$LOADGEN" batch --url "$URL" --entities 100000 --concurrency 2 --duration 300

# profile NAME LOADGEN-ARGS…: runs the load generator for WINDOW+4 s and samples the connector for
# WINDOW s in its middle (after its bodies are generated and its connections are warm).
profile() {
  local name=$1
  shift
  "$LOADGEN" "$@" --url "$URL" --duration $((WINDOW + 4)) >"$OUT/$name.loadgen.txt" &
  local loadgen_pid=$!
  sleep 2
  perf record -q -F 499 --call-graph dwarf,16384 -p "$connector_pid" -o "$OUT/$name.perf.data" \
    -- sleep "$WINDOW" 2>/dev/null
  wait "$loadgen_pid" || true
  perf script --no-inline -F comm,tid,time,ip,sym,dso -i "$OUT/$name.perf.data" 2>/dev/null \
    | python3 "$STAGES" >"$OUT/$name.md"
  echo "## $name ($BACKEND): $(cat "$OUT/$name.loadgen.txt")"
  cat "$OUT/$name.md"
}

for name in $PROFILES; do
  case $name in
    retrieve) profile retrieve retrieve --entities 100000 --requests 10000000 --concurrency 16 --warmup 0 ;;
    batch) profile batch batch --first 1000000 --entities 200000 --concurrency 2 ;;
    *) echo "unknown profile $name" >&2; exit 2 ;;
  esac
done
echo "reports and perf data in $OUT"
