#!/usr/bin/env bash
# "What the merge's hash rows cost" and "Spool segments reused" of BENCHMARKS.md: the CPU time of
# `civitas-loadgen append` (the audit log in process, with a spool, paced at RATE records/s),
# summed by thread name (the runtime threads that make, spool and merge records; the SQLite
# threads that store them), over WINDOW seconds in the middle of the run, for several loadgen
# binaries in turn (BUILDS="NAME=BINARY …", e.g. one built from another revision).
#
#   BUILDS="old=/tmp/old/civitas-loadgen new=target/release/civitas-loadgen" services/loadgen/append_cpu.sh
#
# Environment: BUILDS, ROUNDS (default 3: the builds in turn, that many times), RATE (9000),
# WINDOW (10), SKIP (3: seconds before the window opens). Each run gets a fresh SQLite database
# and spool under a temporary folder, deleted after it. Nothing is sent over the network.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=services/loadgen/common.sh
source services/loadgen/common.sh

ROUNDS=${ROUNDS:-3}
RATE=${RATE:-9000}
WINDOW=${WINDOW:-10}
SKIP=${SKIP:-3}
[[ -n ${BUILDS:-} ]] || { echo "set BUILDS=\"NAME=BINARY …\"" >&2; exit 2; }

# cpu_by_name PID: one line per thread name (digits stripped): total user + system ticks.
cpu_by_name() {
  cpu_by_thread "$1" | awk '{ sub(/[-_]*[0-9]*$/, "", $2); ticks[$2] += $3 }
    END { for (name in ticks) print name, ticks[name] }' | sort
}

echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $RATE records/s, ${WINDOW} s window"
for round in $(seq "$ROUNDS"); do
  for build in $BUILDS; do
    name=${build%%=*}
    work=$(mktemp -d /tmp/civitas-append-cpu.XXXXXX)
    "${build#*=}" append --database-url "sqlite://$work/log.db" --spool "$work/spool" \
      --records $((RATE * (SKIP + WINDOW + 5))) --rate "$RATE" --duration $((SKIP + WINDOW + 5)) \
      --poll-ms 100 >"$work/out.txt" 2>&1 &
    pid=$!
    sleep "$SKIP"
    cpu_by_name "$pid" >"$work/before"
    sleep "$WINDOW"
    cpu_by_name "$pid" >"$work/after"
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    echo "$name, round $round: $(join "$work/before" "$work/after" | awk -v hz="$(getconf CLK_TCK)" \
      '{ printf "%s %d ms  ", $1, ($3 - $2) * 1000 / hz }')"
    rm -rf "$work"
  done
done
