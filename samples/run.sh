#!/usr/bin/env bash
# The agent's main job on bundled sample data, end to end on this machine:
# sets up .venv, starts a private Mosquitto on a free loopback port (never the
# system's), replays the bundled sample drive (samples/drive: the camera video
# and the receiver's NMEA log of one minute on patrol) through the whole
# pipeline - detector, tracker, findings, privacy, outbox, MQTT delivery -
# then scores the findings against the drive's ground truth and shows what
# the broker delivered.
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
.venv/bin/pip install -q -e '.[office]'

work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" > "$work/mosquitto.conf"
"$MOSQUITTO" -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
pids+=($!)
sleep 0.5

# What the city's complaint service would receive: one JSON per finding.
mosquitto_sub -h 127.0.0.1 -p "$port" -t 'patrol/+/events' >"$work/received.jsonl" &
pids+=($!)
sleep 0.3

drive=samples/drive
# Exits when the video ends and the broker has acknowledged every finding.
.venv/bin/patrol-agent replay --video "$drive/video.mp4" --nmea "$drive/track.nmea" \
    --db "$work/outbox.db" --broker "127.0.0.1:$port"
sleep 0.5
echo
echo "== findings against the drive's ground truth ($drive/truth.json) =="
.venv/bin/patrol-agent evaluate --truth "$drive/truth.json" --db "$work/outbox.db"
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
    where = f'{p["lat"]:.5f},{p["lon"]:.5f} ±{p["accuracy_m"]:.0f} m' if p else "no GPS fix"
    print(f'{e["id"]}  {e["label"]:<13} {e["score"]:.2f}  {where}  image {e["image"]["bytes"]} B')
PY
echo
echo "== on the office's map =="
echo "bash samples/office.sh   # the office (collector and map page) on these findings; prints the map's address"
