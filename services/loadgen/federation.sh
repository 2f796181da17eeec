#!/usr/bin/env bash
# The broker's benchmarks of BENCHMARKS.md: three department connectors (release build, SQLite,
# each with its own root key and no anonymous access) and a broker federating them, all on
# 127.0.0.1. Each connector holds ENTITIES ParkingSpots of its own. The same query
# (`type=ParkingSpot&limit=LIMIT`) is sent
#   (1) to one connector directly, with its department's token;
#   (2) to the broker, with the three departments' tokens: a three-way fan-out, merged;
#   (3) to the broker, with a fourth department whose registered connector never answers (a
#       listener that accepts and stays silent) and the caller holding its token too, so every
#       query waits for the source timeout and answers without it.
# (1) and (2) run at each concurrency of CONCURRENCY, alternating, twice.
# Every run is bounded in requests and in time.
#
#   services/loadgen/federation.sh
#
# Environment: CARGO_TARGET_DIR (default: target), NO_BUILD=1 to use the binaries already built
# (CIVITAS_BIN: another civitas binary to run the broker and connectors with),
# PORT (default 9290: broker; connectors PORT+1..PORT+3, the silent source PORT+9), ENTITIES
# (default 2000 per connector), LIMIT (default 20), REQUESTS (default 3000), CONCURRENCY
# (default "1 8"), TIMEOUT_MS (the broker's source timeout, default 300), SLOW_REQUESTS (default
# 100).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=services/loadgen/common.sh
source services/loadgen/common.sh

TARGET=${CARGO_TARGET_DIR:-target}
PORT=${PORT:-9290}
ENTITIES=${ENTITIES:-2000}
LIMIT=${LIMIT:-20}
REQUESTS=${REQUESTS:-3000}
CONCURRENCY=${CONCURRENCY:-1 8}
TIMEOUT_MS=${TIMEOUT_MS:-300}
SLOW_REQUESTS=${SLOW_REQUESTS:-100}
PARKING_CONTEXT_URL=https://raw.githubusercontent.com/smart-data-models/dataModel.Parking/master/context.jsonld

if [[ -z ${NO_BUILD:-} ]]; then
  cargo build --release -p civitas -p civitas-loadgen
fi
CIVITAS=${CIVITAS_BIN:-$TARGET/release/civitas}
LOADGEN=$TARGET/release/civitas-loadgen

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

wait_for() {
  for _ in $(seq 100); do
    curl -fs "$1/health" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "$1 did not start" >&2
  exit 1
}

# A source that accepts connections and never answers: the broker's timeout decides.
python3 -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1024)
held = []
while True:
    c, _ = s.accept(); held.append(c)
' $((PORT + 9)) &
pids+=($!)

departments=""
connector_pids=()
for n in 1 2 3; do
  name=dept$n
  mkdir -p "$work/policies/$name"
  printf '[anonymous]\nread = []\n' >"$work/policies/$name/access.toml"
  public=$("$CIVITAS" keygen --out "$work/$name.key")
  "$CIVITAS" token issue --key "$work/$name.key" --ttl 1d --holder bench --read '*' --write '*' \
    >"$work/$name.token"
  cat >"$work/$name.toml" <<CONFIG
department = "$name"
[contexts]
fetch_remote = false
[contexts.preload]
"$PARKING_CONTEXT_URL" = "$PARKING_CONTEXT_FILE"
[auth]
public_key = "$public"
policies = "policies/$name"
CONFIG
  CIVITAS_LOG=warn "$CIVITAS" connector --config "$work/$name.toml" \
    --database-url "sqlite://$work/$name.db" --listen "127.0.0.1:$((PORT + n))" 2>>"$work/$name.log" &
  pids+=($!)
  connector_pids+=($!)
  departments+="
[[federation.departments]]
name = \"$name\"
public_key = \"$public\"
url = \"http://127.0.0.1:$((PORT + n))\"
"
done

# The fourth department: a key and a token, and its "connector" is the silent listener.
public4=$("$CIVITAS" keygen --out "$work/dept4.key")
"$CIVITAS" token issue --key "$work/dept4.key" --ttl 1d --holder bench --read '*' >"$work/dept4.token"
departments+="
[[federation.departments]]
name = \"dept4\"
public_key = \"$public4\"
url = \"http://127.0.0.1:$((PORT + 9))\"
"

mkdir -p "$work/policies/broker"
printf '[anonymous]\nread = ["*"]\nwrite = ["*"]\n' >"$work/policies/broker/access.toml"
broker_public=$("$CIVITAS" keygen --out "$work/broker.key")
cat >"$work/broker.toml" <<CONFIG
department = "broker"
[contexts]
fetch_remote = false
[contexts.preload]
"$PARKING_CONTEXT_URL" = "$PARKING_CONTEXT_FILE"
[auth]
public_key = "$broker_public"
policies = "policies/broker"
[federation]
source_timeout_ms = $TIMEOUT_MS
$departments
CONFIG
CIVITAS_LOG=warn "$CIVITAS" broker --config "$work/broker.toml" \
  --database-url "sqlite://$work/broker.db" --listen "127.0.0.1:$PORT" 2>>"$work/broker.log" &
pids+=($!)
broker_pid=$!

BROKER=http://127.0.0.1:$PORT
wait_for "$BROKER"
register() {
  curl -fs -o /dev/null -X POST "$BROKER/ngsi-ld/v1/csourceRegistrations" \
    -H 'Content-Type: application/json' \
    -H "Link: <$PARKING_CONTEXT_URL>; rel=\"http://www.w3.org/ns/json-ld#context\"" \
    -d "{\"type\": \"ContextSourceRegistration\", \"endpoint\": \"$1\", \"information\": [{\"entities\": [{\"type\": \"ParkingSpot\"}]}]}"
}
for n in 1 2 3; do
  url=http://127.0.0.1:$((PORT + n))
  wait_for "$url"
  CIVITAS_TOKEN=$(<"$work/dept$n.token") "$LOADGEN" batch --url "$url" \
    --entities "$ENTITIES" --first $(((n - 1) * ENTITIES)) --batch-size 1000 --duration 300 >/dev/null
  register "$url"
done

query="type=ParkingSpot&limit=$LIMIT"
# CPU time (user + system, in clock ticks) of each of the broker and the three connectors.
cpu_ticks() {
  local pid
  for pid in "$broker_pid" "${connector_pids[@]}"; do
    cpu_by_thread "$pid" | awk '{ ticks += $3 } END { print ticks }'
  done
}
run() {
  local label=$1 url=$2 tokens=$3 requests=$4 concurrency=$5
  local before after
  printf '%-36s ' "$label"
  mapfile -t before < <(cpu_ticks)
  CIVITAS_TOKEN=$tokens "$LOADGEN" query --url "$url" --query "$query" --expect "$LIMIT" \
    --requests "$requests" --concurrency "$concurrency" --warmup 50 --duration 300
  mapfile -t after < <(cpu_ticks)
  # CPU per request (warm-up included), in microseconds: broker, then each connector.
  local hz names=(broker dept1 dept2 dept3) line="" i
  hz=$(getconf CLK_TCK)
  for i in 0 1 2 3; do
    line+=" ${names[$i]} $(((after[i] - before[i]) * 1000000 / hz / (requests + 50))) µs"
  done
  printf '%-36s  CPU per request:%s\n' "" "$line"
}
all_tokens="$(<"$work/dept1.token"), $(<"$work/dept2.token"), $(<"$work/dept3.token")"
echo "3 connectors x $ENTITIES ParkingSpots, query $query"
for concurrency in $CONCURRENCY; do
  for round in 1 2; do
    run "direct (one connector), c=$concurrency" "http://127.0.0.1:$((PORT + 1))" \
      "$(<"$work/dept1.token")" "$REQUESTS" "$concurrency"
    run "broker (3-way fan-out), c=$concurrency" "$BROKER" "$all_tokens" "$REQUESTS" "$concurrency"
  done
done
register "http://127.0.0.1:$((PORT + 9))"
for concurrency in $CONCURRENCY; do
  run "broker, dept4 silent (${TIMEOUT_MS} ms), c=$concurrency" "$BROKER" \
    "$all_tokens, $(<"$work/dept4.token")" "$SLOW_REQUESTS" "$concurrency"
done
