#!/usr/bin/env bash
# "Auditing every request" of BENCHMARKS.md: what the audit log costs the HTTP API. Runs the same
# requests against connector binaries built from different revisions — at least one without the
# audit log (BASELINE) and the one built from this tree — interleaved round by round, each run on
# a freshly started connector, and prints a summary with medians and spreads.
#
#   git archive c3a4394^ | tar -x -C /tmp/civitas-noaudit     # the last revision without auditing
#   (cd /tmp/civitas-noaudit && CARGO_TARGET_DIR=/work/target-noaudit cargo build --release -p civitas)
#   BASELINE=/work/target-noaudit/release/civitas services/loadgen/audit_cost.sh
#   BACKENDS=postgres ROUNDS=2 BASELINE=… services/loadgen/audit_cost.sh
#   BUILDS="noaudit=/a/civitas before=/b/civitas audited=target/release/civitas" services/loadgen/audit_cost.sh
#
# Each build gets its own database (revisions may differ in migrations), filled with the same
# 100,000 entities by batch upsert under that build. Cases (CASES, default "a b s w"):
#   a  retrieve, no token, under a policy letting anonymous requests read and write everything;
#   b  retrieve with a token allowing read and write of every type, no anonymous access;
#   s  retrieve as a, sequential (concurrency 1): the latency one request pays;
#   w  create, one new entity per request, with the token of b.
# Round r runs the cases in order and, within each case, the builds in order on odd rounds and in
# reverse on even rounds. Before each run the load average is recorded; after it the connector's
# CPU time per request (/proc/<pid>/stat, user + system, warm-up included).
#
# Environment: BASELINE (a connector binary without auditing) or BUILDS (NAME=BINARY …, the first is
# the reference the others are compared with), AUDIT_SPOOL=1 (give every connector a spool directory
# of its own, `[audit] spool_dir`, as a SQLite file has by default; for PostgreSQL, which has none),
# CARGO_TARGET_DIR (default: target; civitas-loadgen
# and the audited build are taken from it), BACKENDS (default sqlite), ROUNDS (default 3), PG_URL,
# PORT (default 9194), CASES, WORK_ROOT (where the databases and spools go, default /tmp; /dev/shm
# puts them on tmpfs), and the sizes below. NO_BUILD=1 skips `cargo build`. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/../.."

TARGET=${CARGO_TARGET_DIR:-target}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
PORT=${PORT:-9194}
BACKENDS=${BACKENDS:-sqlite}
ROUNDS=${ROUNDS:-3}
CASES=${CASES:-a b s w}
ENTITIES=${ENTITIES:-100000}
RETRIEVE_REQUESTS=${RETRIEVE_REQUESTS:-50000}
RETRIEVE_CONCURRENCY=${RETRIEVE_CONCURRENCY:-16}
RETRIEVE_WARMUP=${RETRIEVE_WARMUP:-500}
SEQUENTIAL_REQUESTS=${SEQUENTIAL_REQUESTS:-5000}
CREATE_REQUESTS=${CREATE_REQUESTS:-5000}
CREATE_CONCURRENCY=${CREATE_CONCURRENCY:-16}
DURATION=${DURATION:-300}

if [[ -z ${BUILDS:-} ]]; then
  if [[ -z ${BASELINE:-} ]]; then
    echo "set BASELINE to a connector binary without the audit log, or BUILDS" >&2
    exit 2
  fi
  BUILDS="baseline=$BASELINE audited=$TARGET/release/civitas"
fi

URL="http://127.0.0.1:$PORT"
unset CIVITAS_TOKEN
LOADGEN="$TARGET/release/civitas-loadgen"
work=$(mktemp -d "${WORK_ROOT:-/tmp}/civitas-audit-cost.XXXXXX")
# shellcheck source=services/loadgen/common.sh
source "$(dirname "$0")/common.sh"
databases=()
cleanup() {
  stop_server
  for name in "${databases[@]}"; do
    psql -q "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS $name WITH (FORCE)" || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

[[ -n ${NO_BUILD:-} ]] || cargo build --release -p civitas -p civitas-loadgen

names=()
declare -A binary
for build in $BUILDS; do
  name=${build%%=*}
  binary[$name]=${build#*=}
  [[ -x ${binary[$name]} ]] || { echo "not an executable: ${binary[$name]}" >&2; exit 2; }
  names+=("$name")
done

ensure_bench_key
full_token=$(bench_token --holder bench --read '*' --write '*')
results="$work/results.tsv"
echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, builds: $BUILDS${AUDIT_SPOOL:+, every connector with a spool directory}"

# spool_config BACKEND BUILD: with AUDIT_SPOOL, adds that build's spool directory to bench.toml (one
# per build and backend, like its database, so that what a run leaves is merged into the same log).
spool_config() {
  [[ -n ${AUDIT_SPOOL:-} ]] || return 0
  printf '\n[audit]\nspool_dir = "%s"\n' "$work/spool-$1-$2" >>"$work/bench.toml"
}

# run BACKEND ROUND CASE BUILD: one run on a freshly started connector; appends a line to results.
run() {
  local backend=$1 round=$2 which=$3 name=$4 load before after line rps p50 p99 count
  case $which in
    a | s) write_bench_config anonymous ;;
    b | w) write_bench_config tokens ;;
  esac
  spool_config "$backend" "$name"
  database_url=${url_of[$name]}
  CIVITAS_BIN=${binary[$name]} launch_connector "$work/connector-$name.log"
  load=$(cut -d' ' -f1 /proc/loadavg)
  before=$(awk '{ print $14 + $15 }' "/proc/$connector_pid/stat")
  case $which in
    a) line=$("$LOADGEN" retrieve --url "$URL" --entities "$ENTITIES" --requests "$RETRIEVE_REQUESTS" \
      --warmup "$RETRIEVE_WARMUP" --concurrency "$RETRIEVE_CONCURRENCY" --duration "$DURATION")
      count=$((RETRIEVE_REQUESTS + RETRIEVE_WARMUP)) ;;
    b) line=$(CIVITAS_TOKEN=$full_token "$LOADGEN" retrieve --url "$URL" --entities "$ENTITIES" \
      --requests "$RETRIEVE_REQUESTS" --warmup "$RETRIEVE_WARMUP" --concurrency "$RETRIEVE_CONCURRENCY" \
      --duration "$DURATION")
      count=$((RETRIEVE_REQUESTS + RETRIEVE_WARMUP)) ;;
    s) line=$("$LOADGEN" retrieve --url "$URL" --entities "$ENTITIES" --requests "$SEQUENTIAL_REQUESTS" \
      --warmup 100 --concurrency 1 --duration "$DURATION")
      count=$((SEQUENTIAL_REQUESTS + 100)) ;;
    w) line=$(CIVITAS_TOKEN=$full_token "$LOADGEN" create --url "$URL" \
      --first $((20000000 + 100000 * round)) --requests "$CREATE_REQUESTS" \
      --concurrency "$CREATE_CONCURRENCY" --duration "$DURATION")
      count=$CREATE_REQUESTS ;;
  esac
  after=$(awk '{ print $14 + $15 }' "/proc/$connector_pid/stat")
  stop_server
  rps=$(sed -n 's/.* \([0-9]*\) requests\/s.*/\1/p' <<<"$line")
  p50=$(sed -n 's/.*latency p50 \([0-9.]*\) ms.*/\1/p' <<<"$line")
  p99=$(sed -n 's/.*p99 \([0-9.]*\) ms.*/\1/p' <<<"$line")
  cpu=$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="$count" \
    'BEGIN { printf "%.0f", t / hz / n * 1e6 }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$backend" "$round" "$which" "$name" "$rps" "$p50" \
    "$p99" "$cpu" "$load" >>"$results"
  echo "  $backend round $round case $which $name (load $load): $rps/s, p50 $p50 ms, p99 $p99 ms, CPU $cpu µs per request"
}

declare -A url_of
for backend in $BACKENDS; do
  echo "## $backend"
  # One database per build, filled under that build.
  for name in "${names[@]}"; do
    database=
    create_database "$backend"
    [[ -z $database ]] || databases+=("$database")
    url_of[$name]=$database_url
    write_bench_config tokens
    spool_config "$backend" "$name"
    CIVITAS_BIN=${binary[$name]} launch_connector "$work/connector-$name.log"
    CIVITAS_TOKEN=$full_token "$LOADGEN" batch --url "$URL" --entities "$ENTITIES" --batch-size 1000 \
      --concurrency 2 --duration "$DURATION" | sed "s/^/  $name: /"
    stop_server
  done
  database=
  for round in $(seq "$ROUNDS"); do
    order=("${names[@]}")
    if ((round % 2 == 0)); then
      order=()
      for ((i = ${#names[@]} - 1; i >= 0; i--)); do order+=("${names[i]}"); done
    fi
    for which in $CASES; do
      for name in "${order[@]}"; do
        run "$backend" "$round" "$which" "$name"
      done
    done
  done
done

# Medians and spreads per backend, case and build; the cost of each build against the first.
python3 - "$results" "${names[0]}" <<'SUMMARY'
import statistics, sys
from collections import defaultdict
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
reference = sys.argv[2]
runs = defaultdict(list)
for backend, rnd, case, name, rps, p50, p99, cpu, load in rows:
    runs[(backend, case, name)].append((int(rnd), float(rps), float(p50), float(p99), float(cpu), float(load)))
cases = {"a": "retrieve, anonymous", "b": "retrieve, token", "s": "retrieve, sequential", "w": "create, token"}
print("\n| backend | case | build | runs | requests/s median [min–max] | p50 | p99 | CPU µs/request | load before | cost vs %s: throughput (median of per-round) | CPU |" % reference)
print("| --- | --- | --- | ---: | --- | ---: | ---: | ---: | --- | --- | ---: |")
for (backend, case, name), values in sorted(runs.items(), key=lambda item: (item[0][0], item[0][1])):
    rps = [v[1] for v in values]
    med = lambda i: statistics.median(v[i] for v in values)
    ref = runs.get((backend, case, reference), [])
    cost = cpu = ""
    if name != reference and ref:
        base = statistics.median(v[1] for v in ref)
        by_round = {v[0]: v[1] for v in ref}
        paired = [1 - v[1] / by_round[v[0]] for v in values if v[0] in by_round]
        cost = "%.1f %% (%.1f %%; %+.0f … %+.0f %%)" % (
            100 * (1 - statistics.median(rps) / base), 100 * statistics.median(paired),
            100 * min(paired), 100 * max(paired))
        cpu = "%+.0f µs" % (med(4) - statistics.median(v[4] for v in ref))
    loads = [v[5] for v in values]
    print("| %s | %s | %s | %d | %.0f [%.0f–%.0f] | %.2f ms | %.2f ms | %.0f | %.1f–%.1f | %s | %s |" % (
        backend, cases.get(case, case), name, len(values), statistics.median(rps), min(rps), max(rps),
        med(2), med(3), med(4), min(loads), max(loads), cost, cpu))
SUMMARY
