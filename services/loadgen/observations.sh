#!/usr/bin/env bash
# How long a connector takes, at its first start on a database written before entities kept their
# first observation (migration 11), to compute it for every entity it holds. Per backend: fills a
# fresh store with ENTITIES generated ParkingSpots by batch upsert, stops the connector, puts the
# database back in the state migration 11 leaves an older one in (the column empty, every entity
# listed as pending), starts the connector again and reports what it logged: how many, how long.
# Loopback only; the start is bounded by TIMEOUT seconds.
#
#   services/loadgen/observations.sh                    # SQLite and PostgreSQL
#   BACKENDS=sqlite ENTITIES=1000000 services/loadgen/observations.sh
#
# Environment: CARGO_TARGET_DIR (default: target), PG_URL (default
# postgres://postgres@127.0.0.1:5432), PORT (default 9195), BACKENDS, ENTITIES (default 100000),
# TIMEOUT (default 1800), NO_BUILD=1 to skip `cargo build`. Needs curl, python3, and psql for
# PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/../.."

TARGET=${CARGO_TARGET_DIR:-target}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
PORT=${PORT:-9195}
BACKENDS=${BACKENDS:-sqlite postgres}
ENTITIES=${ENTITIES:-100000}
TIMEOUT=${TIMEOUT:-1800}
URL="http://127.0.0.1:$PORT"
unset CIVITAS_TOKEN
LOADGEN="$TARGET/release/civitas-loadgen"
work=$(mktemp -d /tmp/civitas-observations.XXXXXX)
# shellcheck source=services/loadgen/common.sh
source "$(dirname "$0")/common.sh"
trap 'stop_connector; rm -rf "$work"' EXIT

[[ -n ${NO_BUILD:-} ]] || cargo build --release -p civitas -p civitas-loadgen

# What migration 11 does to a database written before it.
RESET="UPDATE entities SET first_observed_at = NULL;
DELETE FROM entity_observations_pending;
INSERT INTO entity_observations_pending (tenant, id) SELECT tenant, id FROM entities;"

for backend in $BACKENDS; do
  echo "## $backend, $ENTITIES entities"
  write_bench_config anonymous
  start_connector "$backend" "$work/connector-$backend.log"
  "$LOADGEN" batch --url "$URL" --entities "$ENTITIES" --batch-size 1000 --concurrency 2 \
    --duration 900 | sed 's/^/  /'
  stop_server
  case $backend in
    sqlite) python3 -c 'import sqlite3, sys
db = sqlite3.connect(sys.argv[1]); db.executescript(sys.argv[2]); db.commit()' \
      "${database_url#sqlite://}" "$RESET" ;;
    postgres) psql -q "$database_url" -c "$RESET" ;;
  esac
  log="$work/restart-$backend.log"
  started=$(date +%s.%N)
  launch_connector "$log" "$TIMEOUT" info
  ready=$(date +%s.%N)
  grep -E "first observation" "$log" | sed 's/^/  /'
  awk -v a="$started" -v b="$ready" 'BEGIN { printf "  serving %.1f s after the start\n", b - a }'
  stop_connector
done
