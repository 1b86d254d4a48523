#!/usr/bin/env bash
# The agent's main job on bundled sample data, end to end on this machine:
# sets up .venv, starts a private Mosquitto on a free loopback port (never the
# system's), puts the sample findings into a fresh outbox, runs the agent until
# every finding is acknowledged by the broker, and shows what the broker got.
# Needs: python3 (3.11+), mosquitto and mosquitto-clients (Debian packages).
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in mosquitto mosquitto_sub; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || {
        echo "samples/run.sh: needs $tool (apt-get install mosquitto mosquitto-clients)" >&2
        exit 1
    }
done
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)

python3 -m venv .venv
.venv/bin/pip install -q -e .

work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" > "$work/mosquitto.conf"
"$MOSQUITTO" -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
pids+=($!)
sleep 0.5

n=$(grep -c . samples/findings.jsonl)
# What the city's complaint service would receive: one JSON per finding.
mosquitto_sub -h 127.0.0.1 -p "$port" -t 'patrol/+/events' -C "$n" -W 60 >"$work/received.jsonl" &
sub=$!
sleep 0.3

cat > "$work/agent.toml" <<TOML
[device]
id = "sample-van"
[camera]
enabled = false   # this run only delivers the stored sample findings
[gps]
enabled = false
[store]
path = "$work/outbox.db"
[mqtt]
host = "127.0.0.1"
port = $port
TOML

.venv/bin/patrol-agent events import samples/findings.jsonl --db "$work/outbox.db"
.venv/bin/patrol-agent run --config "$work/agent.toml" --until-drained
wait "$sub"
echo
echo "== the outbox after the run =="
.venv/bin/patrol-agent events list --db "$work/outbox.db"
echo
echo "== what the broker delivered to a subscriber on patrol/+/events =="
.venv/bin/python - "$work/received.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    e = json.loads(line)
    p = e["position"]
    print(f'{e["id"]}  {e["label"]:<13} {e["score"]:.2f}  {p["lat"]:.5f},{p["lon"]:.5f}  image {e["image"]["bytes"]} B')
PY
