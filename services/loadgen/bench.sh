#!/usr/bin/env bash
# The HTTP benchmarks of BENCHMARKS.md, end to end: builds the release binaries, starts one connector
# on SQLite (a temporary file) and runs batch upsert, retrieve and create against it, then the same on
# PostgreSQL (a database created for the run and dropped after it). Everything talks to 127.0.0.1
# only; every run is bounded in requests and in time.
#
#   services/loadgen/bench.sh                  # both backends
#   BACKENDS=sqlite services/loadgen/bench.sh  # one
#
# Environment: CARGO_TARGET_DIR (default: target), PG_URL (server URL without a database name,
# default postgres://postgres@127.0.0.1:5432), PORT (default 9192), BACKENDS, and the sizes below.
# Needs curl, and psql for PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/../.."

TARGET=${CARGO_TARGET_DIR:-target}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
PORT=${PORT:-9192}
BACKENDS=${BACKENDS:-sqlite postgres}
BATCH_ENTITIES=${BATCH_ENTITIES:-100000}
BATCH_SIZE=${BATCH_SIZE:-1000}
BATCH_CONCURRENCY=${BATCH_CONCURRENCY:-2}
RETRIEVE_REQUESTS=${RETRIEVE_REQUESTS:-50000}
RETRIEVE_CONCURRENCY=${RETRIEVE_CONCURRENCY:-16}
CREATE_REQUESTS=${CREATE_REQUESTS:-10000}
CREATE_CONCURRENCY=${CREATE_CONCURRENCY:-16}
DURATION=${DURATION:-300}

URL="http://127.0.0.1:$PORT"
LOADGEN="$TARGET/release/civitas-loadgen"
work=$(mktemp -d /tmp/civitas-bench.XXXXXX)
# shellcheck source=services/loadgen/common.sh
source "$(dirname "$0")/common.sh"
trap 'stop_connector; rm -rf "$work"' EXIT

cargo build --release -p civitas -p civitas-loadgen

write_bench_config

echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p')), rustc $(rustc --version | cut -d' ' -f2)"

for backend in $BACKENDS; do
  start_connector "$backend" "$work/connector-$backend.log"

  echo "## $backend (load average before the runs: $(cut -d' ' -f1-3 /proc/loadavg))"
  # 1. Batch upsert of new entities into the empty store, then of the same entities again (replace).
  "$LOADGEN" batch --url "$URL" --entities "$BATCH_ENTITIES" --batch-size "$BATCH_SIZE" \
    --concurrency "$BATCH_CONCURRENCY" --duration "$DURATION"
  "$LOADGEN" batch --url "$URL" --entities "$BATCH_ENTITIES" --batch-size "$BATCH_SIZE" \
    --concurrency "$BATCH_CONCURRENCY" --duration "$DURATION"
  # 2. Retrieve, pseudo-random ids among the entities just stored.
  "$LOADGEN" retrieve --url "$URL" --entities "$BATCH_ENTITIES" --requests "$RETRIEVE_REQUESTS" \
    --concurrency "$RETRIEVE_CONCURRENCY" --duration "$DURATION"
  # 3. Single-entity create of entities that do not exist yet.
  "$LOADGEN" create --url "$URL" --first 10000000 --requests "$CREATE_REQUESTS" \
    --concurrency "$CREATE_CONCURRENCY" --duration "$DURATION"
  stop_connector
done
