#!/usr/bin/env bash
# "Where the audit's cost is" of BENCHMARKS.md: the connector's CPU time per request, thread by
# thread (HTTP workers, SQLite workers, the main thread that runs the audit merger), under the
# same retrieve load, for several connector binaries. Where `perf` needs a quiet machine to
# compare two builds, per-thread CPU from /proc moves by a few microseconds from run to run.
#
#   BUILDS="off=/tmp/off/civitas audited=target/release/civitas" services/loadgen/thread_cpu.sh
#
# Each build gets its own SQLite database with ENTITIES entities (batch upsert under that build),
# then, for ROUNDS rounds in turn: a fresh start, WARMUP retrieves, and REQUESTS retrieves at
# concurrency CONCURRENCY, with every thread's user + system time read from
# /proc/<pid>/task/*/stat before and after. Prints µs of CPU per request, summed by thread name.
#
# Environment: BUILDS (NAME=BINARY …), CARGO_TARGET_DIR (default target; civitas-loadgen and the
# key tool are taken from it), ROUNDS (default 2), ENTITIES (100000), REQUESTS (60000), WARMUP
# (2000), CONCURRENCY (16), PORT (9195). NO_BUILD=1 skips `cargo build`. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/../.."

TARGET=${CARGO_TARGET_DIR:-target}
PORT=${PORT:-9195}
ROUNDS=${ROUNDS:-2}
ENTITIES=${ENTITIES:-100000}
REQUESTS=${REQUESTS:-60000}
WARMUP=${WARMUP:-2000}
CONCURRENCY=${CONCURRENCY:-16}
URL="http://127.0.0.1:$PORT"
LOADGEN="$TARGET/release/civitas-loadgen"
[[ -n ${BUILDS:-} ]] || { echo "set BUILDS=\"NAME=BINARY …\"" >&2; exit 2; }
unset CIVITAS_TOKEN
work=$(mktemp -d /tmp/civitas-thread-cpu.XXXXXX)
# shellcheck source=services/loadgen/common.sh
source "$(dirname "$0")/common.sh"
trap 'stop_server; rm -rf "$work"' EXIT

[[ -n ${NO_BUILD:-} ]] || cargo build --release -p civitas -p civitas-loadgen

write_bench_config anonymous

echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, builds: $BUILDS"
for round in $(seq "$ROUNDS"); do
  for build in $BUILDS; do
    name=${build%%=*}
    database_url="sqlite://$work/$name.db"
    if [[ ! -f $work/$name.db ]]; then
      CIVITAS_BIN=${build#*=} launch_connector "$work/$name.log"
      "$LOADGEN" batch --url "$URL" --entities "$ENTITIES" --concurrency 2 --duration 300 >/dev/null
      stop_server
    fi
    CIVITAS_BIN=${build#*=} launch_connector "$work/$name.log"
    "$LOADGEN" retrieve --url "$URL" --entities "$ENTITIES" --requests "$WARMUP" \
      --concurrency "$CONCURRENCY" --warmup 0 --duration 120 >/dev/null
    cpu_by_thread "$connector_pid" | sort >"$work/before"
    line=$("$LOADGEN" retrieve --url "$URL" --entities "$ENTITIES" --requests "$REQUESTS" \
      --concurrency "$CONCURRENCY" --warmup 0 --duration 300)
    cpu_by_thread "$connector_pid" | sort >"$work/after"
    stop_server
    echo "$name, round $round: $(sed -n 's/.* \([0-9]*\) requests\/s.*/\1/p' <<<"$line") requests/s"
    join "$work/before" "$work/after" | awk -v hz="$(getconf CLK_TCK)" -v n="$REQUESTS" \
      '{ by[$2] += ($5 - $3) / hz / n * 1e6 } END { for (t in by) printf "  %-16s %6.1f µs per request\n", t, by[t] }' |
      sort
  done
done
