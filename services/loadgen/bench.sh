#!/usr/bin/env bash
# The HTTP benchmarks of BENCHMARKS.md, end to end: builds the release binaries, starts one connector
# on SQLite (a temporary file) and runs batch upsert, retrieve and create against it, then the same on
# PostgreSQL (a database created for the run and dropped after it). Everything talks to 127.0.0.1
# only; every run is bounded in requests and in time.
#
# Authorization is enforced as in production: the connector has a root key (`civitas keygen`) and a
# policy folder. Batch upsert and create send a token allowing read and write of every type (in
# CIVITAS_TOKEN, which civitas-loadgen reads like --auth, so tokens stay out of the process list).
# Retrieve runs four cases, ROUNDS times interleaved (a b c d, then d c b a, …), each on a freshly
# restarted connector (same database), and reports the connector's CPU time per request too:
#   (a) anonymous, under a policy that lets requests without a token read and write everything;
#   (b) with that full token, and no anonymous access;
#   (c) with a partner's token, no anonymous access: read of ParkingSpot only, with an allow-list of
#       4 of its 8 attributes (so the response is projected);
#   (d) anonymous with `attrs=` naming the same 4 attributes: the baseline for (c).
#
#   services/loadgen/bench.sh                  # both backends
#   BACKENDS=sqlite services/loadgen/bench.sh  # one
#
# Environment: CARGO_TARGET_DIR (default: target; the binaries are taken from it), PG_URL (server
# URL without a database name, default postgres://postgres@127.0.0.1:5432), PORT (default 9192),
# BACKENDS, ROUNDS (default 2) and the sizes below. Needs curl, and psql for PostgreSQL.
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
RETRIEVE_WARMUP=${RETRIEVE_WARMUP:-500}
ROUNDS=${ROUNDS:-2}
CREATE_REQUESTS=${CREATE_REQUESTS:-10000}
CREATE_CONCURRENCY=${CREATE_CONCURRENCY:-16}
DURATION=${DURATION:-300}

URL="http://127.0.0.1:$PORT"
# Anonymous runs must send no token, whatever the caller's environment holds.
unset CIVITAS_TOKEN
LOADGEN="$TARGET/release/civitas-loadgen"
work=$(mktemp -d /tmp/civitas-bench.XXXXXX)
# shellcheck source=services/loadgen/common.sh
source "$(dirname "$0")/common.sh"
trap 'stop_connector; rm -rf "$work"' EXIT

cargo build --release -p civitas -p civitas-loadgen

ensure_bench_key
# The partner's attributes: 4 of the generated ParkingSpot's 8 (names of the Parking context).
PARTNER_ATTRS=status,category,name,location
# Read and write of every type: the token of the department's own applications.
full_token=$(bench_token --holder bench --read '*' --write '*')
# A partner agency's token: read of parking spots only, and only the attributes above.
partner_token=$(bench_token --holder partner-agency --read "$PARKING_SPOT" \
  --attrs "$PARTNER_ATTRS" --context "$PARKING_CONTEXT_FILE")

echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p')), rustc $(rustc --version | cut -d' ' -f2)"

# The connector's CPU time so far (user + system, clock ticks).
connector_ticks() {
  awk '{ print $14 + $15 }' "/proc/$connector_pid/stat"
}

# retrieve LABEL LOADGEN-ARGS…: one retrieve run among the stored entities, labelled, and the
# connector's CPU time per request over it (warm-up included), which the sharing of the machine
# disturbs less than the throughput.
retrieve() {
  local label=$1 before after
  shift
  echo -n "$label: "
  before=$(connector_ticks)
  "$LOADGEN" retrieve --url "$URL" --entities "$BATCH_ENTITIES" --requests "$RETRIEVE_REQUESTS" \
    --warmup "$RETRIEVE_WARMUP" --concurrency "$RETRIEVE_CONCURRENCY" --duration "$DURATION" "$@"
  after=$(connector_ticks)
  awk -v ticks=$((after - before)) -v hz="$(getconf CLK_TCK)" \
    -v n=$((RETRIEVE_REQUESTS + RETRIEVE_WARMUP)) \
    'BEGIN { printf "  connector CPU %.2f s, %.0f µs per request\n", ticks / hz, ticks / hz / n * 1e6 }'
}

for backend in $BACKENDS; do
  log="$work/connector-$backend.log"
  create_database "$backend"
  write_bench_config tokens
  launch_connector "$log"

  echo "## $backend (load average before the runs: $(cut -d' ' -f1-3 /proc/loadavg))"
  # 1. Batch upsert of new entities into the empty store, then of the same entities again (replace).
  CIVITAS_TOKEN=$full_token "$LOADGEN" batch --url "$URL" --entities "$BATCH_ENTITIES" \
    --batch-size "$BATCH_SIZE" --concurrency "$BATCH_CONCURRENCY" --duration "$DURATION"
  CIVITAS_TOKEN=$full_token "$LOADGEN" batch --url "$URL" --entities "$BATCH_ENTITIES" \
    --batch-size "$BATCH_SIZE" --concurrency "$BATCH_CONCURRENCY" --duration "$DURATION"
  stop_server

  # 2. Retrieve, pseudo-random ids among the entities just stored: without and with tokens, each
  #    on a connector restarted with the matching policy; odd rounds run a b c d, even rounds
  #    d c b a, so that a drift of the machine's load does not favour one case.
  for round in $(seq "$ROUNDS"); do
    echo "### retrieve, round $round of $ROUNDS (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    cases="a b c d"
    ((round % 2)) || cases="d c b a"
    for which in $cases; do
      case $which in
        a | d) write_bench_config anonymous ;;
        b | c) write_bench_config tokens ;;
      esac
      launch_connector "$log"
      case $which in
        a) retrieve "a. anonymous (policy: anyone reads and writes *)" ;;
        b) CIVITAS_TOKEN=$full_token retrieve "b. token read+write *, no anonymous access" ;;
        c) CIVITAS_TOKEN=$partner_token \
          retrieve "c. partner token: ParkingSpot, attributes $PARTNER_ATTRS" ;;
        d) retrieve "d. anonymous, attrs=$PARTNER_ATTRS (baseline of c)" --query "attrs=$PARTNER_ATTRS" ;;
      esac
      stop_server
    done
  done

  # 3. Single-entity create of entities that do not exist yet.
  write_bench_config tokens
  launch_connector "$log"
  CIVITAS_TOKEN=$full_token "$LOADGEN" create --url "$URL" --first 10000000 \
    --requests "$CREATE_REQUESTS" --concurrency "$CREATE_CONCURRENCY" --duration "$DURATION"
  stop_connector
done
