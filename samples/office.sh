#!/usr/bin/env bash
# The office on the sample drive's findings: starts a private Mosquitto on a free loopback
# port, `patrol-office serve` (collector and map page) with a SQLite store in samples/out/,
# replays the bundled sample drive through the agent into it, prints the map's address and
# serves until Ctrl-C. Uses the .venv that samples/run.sh sets up (no set-up of its own).
# OFFICE_HTTP=HOST:PORT chooses where the page listens (default 127.0.0.1:8080, or a free
# port when 8080 is taken).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/patrol-office ] || {
    echo "samples/office.sh: run 'bash samples/run.sh' first (it sets up .venv)" >&2
    exit 1
}
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
free_port() {
    .venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
port_free() {
    .venv/bin/python -c 'import socket, sys; s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null
}
http=${OFFICE_HTTP:-}
if [ -z "$http" ]; then
    if port_free 8080; then http=127.0.0.1:8080; else http=127.0.0.1:$(free_port); fi
fi

work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM
port=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" > "$work/mosquitto.conf"
"$MOSQUITTO" -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
pids+=($!)
sleep 0.5

mkdir -p samples/out
rm -f samples/out/office.sqlite*
.venv/bin/patrol-office serve --config samples/office.toml --broker "127.0.0.1:$port" \
    --store sqlite:///samples/out/office.sqlite --http "$http" >"$work/office.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q "connected to" "$work/office.log" && break; sleep 0.1; done

drive=samples/drive
.venv/bin/patrol-agent replay --video "$drive/video.mp4" --nmea "$drive/track.nmea" \
    --speed max --db "$work/outbox.db" --broker "127.0.0.1:$port" --quiet 2>&1 | tail -1
sleep 1
.venv/bin/python - "$http" <<'PY'
import json, sys, urllib.request
base = f"http://{sys.argv[1]}"
features = json.load(urllib.request.urlopen(base + "/api/complaints.geojson"))["features"]
print(f"the office holds {len(features)} complaint(s) from the sample drive:")
for f in features:
    p = f["properties"]
    lon, lat = f["geometry"]["coordinates"]
    print(f'  {p["id"]}  {p["class"]:<13} {p["score"]:.2f}  {lat:.5f},{lon:.5f}  {p["status"]}')
PY
echo
echo "map: http://$http/   (log in as 'officer' with the password 'goyang-sample'; Ctrl-C stops)"
wait "${pids[1]}"
