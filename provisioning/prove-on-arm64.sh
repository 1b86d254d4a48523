#!/usr/bin/env bash
# Proves provisioning on the Pi's architecture, on any Debian machine with root:
#
#   sudo provisioning/prove-on-arm64.sh [--workdir DIR] [--fresh]
#
# 1. registers qemu-user-static for arm64 binaries (binfmt_misc);
# 2. builds a Debian bookworm arm64 root with debootstrap (kept in --workdir, default
#    /var/tmp/patrol-arm64, and reused by the next run unless --fresh);
# 3. runs provisioning/provision.sh into it: Debian's arm64 packages, the agent in a
#    virtual environment from the aarch64 wheels, the config, the unit; with the
#    system's numpy kept in it (--system-numpy yes), as on a unit with the Pi camera, and
#    tflite-runtime beside ai-edge-litert (whose aarch64 build crashes under qemu-user as
#    it loads; on Pi hardware it is the default), the replay asking for tflite-runtime;
# 4. replays the bundled sample drive inside it (every program an arm64 one, emulated)
#    to a Mosquitto on this machine, until its first finding is delivered, then to the
#    drive's end; and scores the findings.
# It prints what it did and how long each step took. It needs the Debian packages
# debootstrap, qemu-user-static, binfmt-support, mosquitto and mosquitto-clients (it says
# which are missing), the package registries, and about 2 GB and 15 minutes.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/.." && pwd)
WORK=/var/tmp/patrol-arm64
FRESH=0
while [ $# -gt 0 ]; do
    case "$1" in
        --workdir) WORK=${2:?}; shift 2 ;;
        --fresh) FRESH=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "prove-on-arm64.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "prove-on-arm64.sh: needs root" >&2; exit 2; }
missing=""
for t in debootstrap qemu-aarch64-static update-binfmts mosquitto mosquitto_sub; do
    command -v "$t" >/dev/null || [ -x "/usr/sbin/$t" ] || missing="$missing $t"
done
[ -z "$missing" ] || { echo "prove-on-arm64.sh: missing:$missing (apt-get install debootstrap \
qemu-user-static binfmt-support mosquitto mosquitto-clients)" >&2; exit 2; }

ROOT=$WORK/root
START=$(date +%s)
report=()
t_step=$START
begin() { t_step=$(date +%s); echo; echo "== $1"; }
done_step() {
    local took=$(( $(date +%s) - t_step ))
    report+=("$(printf '%-58s %4d s' "$1" "$took")")
    echo "-- $1: $took s"
}
mounted=()
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[$i]}" 2>/dev/null || true; done
}
trap cleanup EXIT

begin "arm64 binaries through qemu (binfmt_misc)"
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
grep -q enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 ||
    { echo "qemu-aarch64 is not registered with binfmt_misc" >&2; exit 1; }
done_step "qemu-aarch64 registered"

begin "a Debian bookworm arm64 root at $ROOT"
MIRROR=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources \
    2>/dev/null | head -1)
MIRROR=${MIRROR:-http://deb.debian.org/debian}
if [ "$FRESH" = 1 ]; then rm -rf "$ROOT"; fi
if [ -f "$ROOT/etc/debian_version" ] && [ -x "$ROOT/usr/bin/python3" ]; then
    echo "reusing it (--fresh builds it again)"
    done_step "debootstrap (reused)"
else
    rm -rf "$ROOT"
    mkdir -p "$ROOT"
    debootstrap --arch=arm64 --variant=minbase \
        --include=python3,python3-venv,python3-pip,ca-certificates bookworm "$ROOT" "$MIRROR" \
        >"$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log"; exit 1; }
    done_step "debootstrap bookworm arm64 (minbase) from $MIRROR"
fi
# What pip and apt inside need from this machine: its CA bundle and name service.
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
for m in proc sys dev dev/pts; do
    mount --bind "/$m" "$ROOT/$m"
    mounted+=("$ROOT/$m")
done
echo "inside: $(chroot "$ROOT" uname -m), $(chroot "$ROOT" python3 --version), \
Debian $(cat "$ROOT/etc/debian_version")"

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
begin "provisioning/provision.sh into the arm64 root"
env -u PIP_FIND_LINKS -u PIP_CONSTRAINT "$HERE/provision.sh" --root "$ROOT" \
    --vehicle arm64-proof --device-id arm64-proof --broker "127.0.0.1:$PORT" --no-tls \
    --system-numpy yes --extras tflite \
    | tee "$WORK/provision.log"
done_step "provision.sh: packages, venv from aarch64 wheels, config, unit"
echo "agent inside: $(chroot "$ROOT" /opt/patrol-agent/venv/bin/patrol-agent --version), \
$(chroot "$ROOT" /opt/patrol-agent/venv/bin/python -c \
'import numpy, cv2, importlib.metadata as m; print("numpy", numpy.__version__, "opencv", cv2.__version__, "tflite-runtime", m.version("tflite-runtime"))')"

begin "the sample drive replayed inside, delivered to Mosquitto on this machine"
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$PORT" >"$WORK/mosquitto.conf"
"$(command -v mosquitto || echo /usr/sbin/mosquitto)" -c "$WORK/mosquitto.conf" \
    >"$WORK/mosquitto.log" 2>&1 &
pids+=($!)
sleep 0.5
rm -f "$WORK/first.json"
mosquitto_sub -h 127.0.0.1 -p "$PORT" -t 'patrol/+/events' -C 1 -W 1800 >"$WORK/first.json" &
sub=$!
pids+=("$sub")
rm -rf "$ROOT/var/tmp/drive" "$ROOT/var/tmp/replay.db"*
cp -r "$SRC/samples/drive" "$ROOT/var/tmp/drive"
t_replay=$(date +%s)
printf '[detector]\nruntime = "tflite-runtime"\n' >"$ROOT/var/tmp/replay.toml"
chroot "$ROOT" /opt/patrol-agent/venv/bin/patrol-agent replay --video /var/tmp/drive/video.mp4 \
    --nmea /var/tmp/drive/track.nmea --db /var/tmp/replay.db --broker "127.0.0.1:$PORT" \
    --config /var/tmp/replay.toml --quiet >"$WORK/replay.out" 2>"$WORK/replay.err" &
replay=$!
pids+=("$replay")
while kill -0 "$sub" 2>/dev/null; do  # until the first finding arrives, or the replay ends
    if ! kill -0 "$replay" 2>/dev/null; then
        sleep 2
        kill -0 "$sub" 2>/dev/null || break
        echo "the replay ended before any finding was delivered:" >&2
        tail -20 "$WORK/replay.err" >&2
        exit 1
    fi
    sleep 1
done
first=$(( $(date +%s) - t_replay ))
python3 - "$WORK/first.json" <<'PY'
import json, sys
text = open(sys.argv[1]).read().strip()
if not text:
    sys.exit("no finding was delivered")
e = json.loads(text)
p = e["position"]
print(f"first delivered finding: {e['label']} {e['score']:.2f} at {p['lat']:.5f},{p['lon']:.5f} "
      f"from device {e['device']}, captured {e['captured_at']}")
PY
report+=("$(printf '%-58s %4d s' "first finding delivered (replay started to PUBACK)" "$first")")
wait "$replay"
cat "$WORK/replay.out"
done_step "the whole 60 s drive replayed under emulation"
chroot "$ROOT" /opt/patrol-agent/venv/bin/patrol-agent evaluate --truth /var/tmp/drive/truth.json \
    --db /var/tmp/replay.db

echo
echo "== what it took"
printf '%s\n' "${report[@]}"
printf '%-58s %4d s\n' "in all" $(( $(date +%s) - START ))
