#!/usr/bin/env bash
# Sets up a patrol unit on a Raspberry Pi OS Bookworm SD card, in one command:
#
#   provisioning/provision.sh --vehicle V --broker HOST[:PORT] [--device-id ID]
#                             [--fleet FILE] [--root DIR] [options]
#
# On the Pi itself (as root) it sets up the running system; with --root DIR it sets up
# the system under DIR instead (an SD card mounted on a laptop, or a test's directory
# tree). It is idempotent: each step says "unchanged" or what it changed, and a second
# run with the same arguments changes nothing and says so. Steps that need something the
# target does not have (the Pi's board serial, Debian's package tools, a Python to run
# the agent, the Pi's boot partition) are skipped with a line that says why.
#
# Options:
#   --vehicle V           the vehicle (fleet number or plate): device.name, and the row of
#                         the fleet file
#   --broker HOST[:PORT]  the city's MQTT broker (port default 8883 with TLS, 1883 without)
#   --device-id ID        default: the fleet file's, else the one this unit already has,
#                         else pi-<board serial>
#   --fleet FILE          CSV with a header: vehicle,device_id,broker[,username,camera,
#                         gps_device,gps_baud]; the row of --vehicle fills what is not given
#   --root DIR            set up the system under DIR, not this one
#   --username NAME       MQTT user name (default: the device id)
#   --password-file FILE  MQTT password, installed as a credential (root only)
#   --ca FILE             CA that signed the broker's certificate (default: the system's)
#   --cert FILE           this unit's client certificate, signed from the CSR a first run
#                         made (the key is made here and never leaves the unit)
#   --no-tls              plain MQTT (a bench broker only)
#   --camera SPEC         picamera2, a device index or /dev path, or a URL (default:
#                         picamera2 where python3-picamera2 is installed, else 0)
#   --gps-device DEV      the receiver's serial device (default: gpsd finds USB receivers)
#   --gps-baud N          its baud rate (default: gpsd finds it)
#   --system-numpy auto|yes|no  keep the system's numpy in the agent's venv (with OpenCV 4.11,
#                         which takes it), as picamera2's compiled modules need; auto (the
#                         default): when python3-picamera2 is installed
#   --extras LIST         the agent's optional extras to install too (e.g. tflite)
#   --no-packages         do not install Debian packages (offline; done already)
#   --power-safe          also make the root file system safer against power cuts
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/.." && pwd)
ROOT=/
VEHICLE="" BROKER="" DEVICE_ID="" FLEET="" USERNAME="" PASSWORD_FILE="" CA="" CERT=""
CAMERA="" GPS_DEVICE="" GPS_BAUD="" TLS=1 PACKAGES=1 POWER_SAFE=0 SYSTEM_NUMPY=auto EXTRAS=""

die() { echo "provision.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --vehicle) VEHICLE=${2:?}; shift 2 ;;
        --broker) BROKER=${2:?}; shift 2 ;;
        --device-id) DEVICE_ID=${2:?}; shift 2 ;;
        --fleet) FLEET=${2:?}; shift 2 ;;
        --root) ROOT=${2:?}; shift 2 ;;
        --username) USERNAME=${2:?}; shift 2 ;;
        --password-file) PASSWORD_FILE=${2:?}; shift 2 ;;
        --ca) CA=${2:?}; shift 2 ;;
        --cert) CERT=${2:?}; shift 2 ;;
        --no-tls) TLS=0; shift ;;
        --camera) CAMERA=${2:?}; shift 2 ;;
        --gps-device) GPS_DEVICE=${2:?}; shift 2 ;;
        --gps-baud) GPS_BAUD=${2:?}; shift 2 ;;
        --no-packages) PACKAGES=0; shift ;;
        --system-numpy) SYSTEM_NUMPY=${2:?}; shift 2 ;;
        --extras) EXTRAS=${2:?}; shift 2 ;;
        --power-safe) POWER_SAFE=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[ -n "$VEHICLE" ] || die "--vehicle is required"
[ -d "$ROOT" ] || die "--root $ROOT: no such directory"
ROOT=$(cd "$ROOT" && pwd)
R=${ROOT%/}  # prefix for paths: "" on the Pi itself
[ "$(id -u)" = 0 ] || die "needs root (run it with sudo)"

changes=0
step() { printf '  %-44s %s\n' "$1" "$2"; }
changed() { step "$1" "$2"; changes=$((changes + 1)); }
skipped() { step "$1" "skipped: $2"; }
# Run a program of the target system: here, or under chroot in --root.
in_root() { if [ -z "$R" ]; then "$@"; else chroot "$ROOT" "$@"; fi; }
runnable_root() { [ -z "$R" ] || chroot "$ROOT" /bin/true 2>/dev/null; }

# put TMPFILE PATH MODE: install a file when its content or mode differ.
put() {
    local src=$1 path=$2 mode=$3 dst="$R$2"
    if [ -f "$dst" ] && cmp -s "$src" "$dst" && [ "$(stat -c %a "$dst")" = "${mode#0}" ]; then
        step "$path" unchanged
    else
        mkdir -p "$(dirname "$dst")"
        install -m "$mode" "$src" "$dst"
        changed "$path" written
    fi
    rm -f "$src"
}
# text PATH MODE: install standard input as a file.
text() { local t; t=$(mktemp); cat >"$t"; put "$t" "$1" "$2"; }

# --- the fleet file's row ---------------------------------------------------------
if [ -n "$FLEET" ]; then
    [ -f "$FLEET" ] || die "--fleet $FLEET: no such file"
    row=$(python3 - "$FLEET" "$VEHICLE" <<'PY'
import csv, shlex, sys
path, vehicle = sys.argv[1], sys.argv[2]
with open(path, newline="", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
if not rows or "vehicle" not in rows[0]:
    sys.exit(f"provision.sh: --fleet {path}: needs a header row with a 'vehicle' column")
match = [r for r in rows if (r.get("vehicle") or "").strip() == vehicle]
if not match:
    sys.exit(f"provision.sh: --fleet {path}: no row for vehicle {vehicle!r}")
keys = ("device_id", "broker", "username", "camera", "gps_device", "gps_baud")
for k in keys:
    print(f"FLEET_{k.upper()}={shlex.quote((match[0].get(k) or '').strip())}")
PY
) || exit 2
    eval "$row"
    DEVICE_ID=${DEVICE_ID:-$FLEET_DEVICE_ID} BROKER=${BROKER:-$FLEET_BROKER}
    USERNAME=${USERNAME:-$FLEET_USERNAME} CAMERA=${CAMERA:-$FLEET_CAMERA}
    GPS_DEVICE=${GPS_DEVICE:-$FLEET_GPS_DEVICE} GPS_BAUD=${GPS_BAUD:-$FLEET_GPS_BAUD}
fi
[ -n "$BROKER" ] || die "--broker is required (or a fleet row with a broker)"
BROKER_HOST=${BROKER%:*} BROKER_PORT=""
[ "$BROKER_HOST" != "$BROKER" ] && BROKER_PORT=${BROKER##*:}
[ -n "$BROKER_PORT" ] || { [ "$TLS" = 1 ] && BROKER_PORT=8883 || BROKER_PORT=1883; }
case "$BROKER_PORT" in *[!0-9]*|"") die "--broker $BROKER: the port is not a number" ;; esac

echo "provisioning patrol unit for vehicle $VEHICLE into ${ROOT}"

# --- system packages -----------------------------------------------------------------
PKGS="gpsd gpsd-clients python3 python3-venv python3-pip mosquitto-clients openssl"
if [ "$PACKAGES" = 0 ]; then
    skipped "packages" "--no-packages"
elif [ ! -x "$R/usr/bin/apt-get" ] || ! runnable_root; then
    skipped "packages" "no Debian system to run apt-get in at $ROOT"
else
    if in_root apt-cache show python3-picamera2 >/dev/null 2>&1; then
        PKGS="$PKGS python3-picamera2"
    else
        step "python3-picamera2" "not in this system's archive (not Raspberry Pi OS): OpenCV cameras only"
    fi
    missing=""
    for p in $PKGS; do
        in_root dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
            missing="$missing $p"
    done
    if [ -z "$missing" ]; then
        step "packages" unchanged
    else
        in_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        # shellcheck disable=SC2086
        in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends $missing >/dev/null
        changed "packages" "installed$missing"
    fi
fi

# --- the service's user -------------------------------------------------------------------
text /etc/sysusers.d/patrol-agent.conf 0644 <<'EOF'
# patrol-agent's system user, in the groups that open the camera and serial receivers.
u patrol-agent - "patrol-agent" /var/lib/patrol-agent /usr/sbin/nologin
m patrol-agent video
m patrol-agent render
m patrol-agent dialout
EOF
member() { grep -q "^$1:[^:]*:[^:]*:\(.*,\)\{0,1\}patrol-agent\(,.*\)\{0,1\}$" "$R/etc/group"; }
if grep -q '^patrol-agent:' "$R/etc/passwd" 2>/dev/null && member video && member render &&
        member dialout; then
    step "user patrol-agent" unchanged
else
    if [ -z "$R" ]; then systemd-sysusers >/dev/null 2>&1
    else systemd-sysusers --root "$ROOT" >/dev/null 2>&1; fi
    changed "user patrol-agent" "created, in groups video, render, dialout"
fi

# --- the device id -------------------------------------------------------------------
ID_FILE=/etc/patrol-agent/device-id
if [ -z "$DEVICE_ID" ] && [ -s "$R$ID_FILE" ]; then
    DEVICE_ID=$(cat "$R$ID_FILE")
fi
if [ -z "$DEVICE_ID" ]; then
    serial=""
    for f in "$R/proc/device-tree/serial-number" "$R/sys/firmware/devicetree/base/serial-number"; do
        [ -r "$f" ] && serial=$(tr -d '\0' <"$f") && break
    done
    if [ -z "$serial" ] && [ -z "$R" ]; then
        serial=$(awk -F': *' '/^Serial/ {print $2}' /proc/cpuinfo 2>/dev/null || true)
    fi
    serial=$(printf '%s' "$serial" | tr -dc '0-9a-fA-F' | tr 'A-F' 'a-f')
    [ -n "$serial" ] || die "no device id: give --device-id or a fleet row with one (there is \
no Raspberry Pi board serial to take it from here)"
    DEVICE_ID="pi-${serial: -8}"
fi
case "$DEVICE_ID" in *[!A-Za-z0-9_.-]*) die "device id '$DEVICE_ID': only letters, digits, . _ -" ;; esac
echo "$DEVICE_ID" | text "$ID_FILE" 0644
USERNAME=${USERNAME:-$DEVICE_ID}

# --- credentials and TLS ------------------------------------------------------------------
CRED=/etc/patrol-agent/credentials
mkdir -p "$R$CRED" "$R/etc/patrol-agent/tls"
chmod 700 "$R$CRED"
KEY="$CRED/mqtt-client-key" CSR="/etc/patrol-agent/tls/$DEVICE_ID.csr"
if [ -s "$R$KEY" ]; then
    step "$KEY" "unchanged (made on this unit earlier)"
else
    (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
        -out "$R$KEY" 2>/dev/null)
    changed "$KEY" "made here (EC P-256); it never leaves the unit"
fi
csr_tmp=$(mktemp)
subject="/O=patrol/OU=$VEHICLE/CN=$DEVICE_ID"
if [ -s "$R$CSR" ] && [ "$(openssl req -in "$R$CSR" -noout -subject -nameopt compat \
        | sed 's/^subject=//')" = "$subject" ] && \
   [ "$(openssl req -in "$R$CSR" -noout -pubkey)" = "$(openssl pkey -in "$R$KEY" -pubout)" ]; then
    step "$CSR" unchanged
else
    openssl req -new -key "$R$KEY" -subj "$subject" -out "$csr_tmp" 2>/dev/null
    put "$csr_tmp" "$CSR" 0644
    csr_tmp=""
fi
[ -z "$csr_tmp" ] || rm -f "$csr_tmp"
if [ -n "$CERT" ]; then
    [ -f "$CERT" ] || die "--cert $CERT: no such file"
    [ "$(openssl x509 -in "$CERT" -noout -pubkey 2>/dev/null)" = \
      "$(openssl pkey -in "$R$KEY" -pubout)" ] ||
        die "--cert $CERT is not for this unit's key: have the office sign $CSR"
    t=$(mktemp); cp "$CERT" "$t"; put "$t" /etc/patrol-agent/tls/client.crt 0644
fi
if [ -n "$CA" ]; then
    [ -f "$CA" ] || die "--ca $CA: no such file"
    t=$(mktemp); cp "$CA" "$t"; put "$t" /etc/patrol-agent/tls/ca.pem 0644
fi
if [ -n "$PASSWORD_FILE" ]; then
    [ -f "$PASSWORD_FILE" ] || die "--password-file $PASSWORD_FILE: no such file"
    t=$(mktemp); cp "$PASSWORD_FILE" "$t"; put "$t" "$CRED/mqtt-password" 0600
elif [ ! -e "$R$CRED/mqtt-password" ]; then
    # The unit loads this credential whether the broker wants a password or not.
    : | text "$CRED/mqtt-password" 0600
else
    step "$CRED/mqtt-password" unchanged
fi

# --- the config ------------------------------------------------------------------------
if [ -z "$CAMERA" ] || [ "$CAMERA" = auto ]; then
    if [ -d "$R/usr/lib/python3/dist-packages/picamera2" ]; then CAMERA=picamera2; else CAMERA=0; fi
fi
if [ "$CAMERA" = picamera2 ]; then CAMERA_KIND=picamera2 CAMERA_SOURCE=0
else CAMERA_KIND=opencv CAMERA_SOURCE=$CAMERA; fi
PASSWORD_LINE=""
[ -n "$PASSWORD_FILE" ] && PASSWORD_LINE='password_file = "${CREDENTIALS_DIRECTORY}/mqtt-password"'
TLS_SECTION=""
if [ "$TLS" = 1 ]; then
    TLS_SECTION="[mqtt.tls]"
    [ -s "$R/etc/patrol-agent/tls/ca.pem" ] &&
        TLS_SECTION="$TLS_SECTION"$'\nca_file = "/etc/patrol-agent/tls/ca.pem"'
    [ -s "$R/etc/patrol-agent/tls/client.crt" ] && TLS_SECTION="$TLS_SECTION"$'\n'\
'cert_file = "/etc/patrol-agent/tls/client.crt"'$'\n''key_file = "${CREDENTIALS_DIRECTORY}/mqtt-client-key"'
fi
python3 - "$HERE/agent.toml.template" <<PY | text /etc/patrol-agent/agent.toml 0644
import sys
values = {"VEHICLE": """$VEHICLE""", "DEVICE_ID": "$DEVICE_ID", "CAMERA_KIND": "$CAMERA_KIND",
          "CAMERA_SOURCE": """$CAMERA_SOURCE""", "BROKER_HOST": """$BROKER_HOST""",
          "BROKER_PORT": "$BROKER_PORT", "USERNAME": """$USERNAME""",
          "PASSWORD_LINE": r'''$PASSWORD_LINE''', "TLS_SECTION": r'''$TLS_SECTION'''}
text = open(sys.argv[1], encoding="utf-8").read()
for k, v in values.items():
    text = text.replace(f"@{k}@", v.replace("\\\\", "\\\\\\\\").replace('"', '\\\\"')
                        if k not in ("PASSWORD_LINE", "TLS_SECTION") else v)
sys.stdout.write("\n".join(line.rstrip() for line in text.splitlines()).rstrip() + "\n")
PY

# --- gpsd ------------------------------------------------------------------------------
text /etc/default/gpsd 0644 <<EOF
# Written by patrol-agent provisioning. -n: keep the receiver's fix warm with no client.
START_DAEMON="true"
USBAUTO="true"
DEVICES="$GPS_DEVICE"
GPSD_OPTIONS="-n${GPS_BAUD:+ -s $GPS_BAUD}"
EOF

# --- journald: logs never fill the card --------------------------------------------------
text /etc/systemd/journald.conf.d/patrol-agent.conf 0644 <<'EOF'
# Written by patrol-agent provisioning: the journal keeps to 64 MB on the SD card.
[Journal]
Storage=persistent
SystemMaxUse=64M
SystemKeepFree=512M
RuntimeMaxUse=32M
MaxRetentionSec=2month
EOF

# --- the agent, in a virtual environment that sees the system's picamera2 -----------------
APP=/opt/patrol-agent
src_hash=$(cd "$SRC" && find agent models docs provisioning systemd setup.py pyproject.toml \
    README.md -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | sort -z |
    xargs -0 sha256sum | sha256sum | cut -c1-64)
if [ -f "$R$APP/src/.tree-sha256" ] && [ "$(cat "$R$APP/src/.tree-sha256")" = "$src_hash" ]; then
    step "$APP/src" unchanged
    src_new=0
else
    rm -rf "$R$APP/src"
    mkdir -p "$R$APP/src"
    (cd "$SRC" && tar -cf - --exclude=__pycache__ --exclude='*.pyc' agent models docs \
        provisioning systemd setup.py pyproject.toml README.md) | tar -xf - -C "$R$APP/src"
    echo "$src_hash" >"$R$APP/src/.tree-sha256"
    changed "$APP/src" "the agent's source, $(cut -c1-12 <"$R$APP/src/.tree-sha256")"
    src_new=1
fi
if [ ! -x "$R/usr/bin/python3" ] || ! runnable_root; then
    skipped "$APP/venv" "no Python to run here at $ROOT; run this again on the unit"
else
    if [ ! -x "$R$APP/venv/bin/python" ]; then
        in_root python3 -m venv --system-site-packages "$APP/venv"
        src_new=1
    fi
    if [ "$src_new" = 1 ] || [ ! -x "$R$APP/venv/bin/patrol-agent" ]; then
        # The venv sees the system's packages. picamera2's compiled modules are built
        # against the system's numpy (1.24 on Bookworm): where they are, the venv keeps that
        # numpy, with OpenCV 4.11, which takes it (ai-edge-litert does too).
        : >"$R$APP/constraints.txt"
        extra=${EXTRAS:+[$EXTRAS]}
        if [ "$SYSTEM_NUMPY" = auto ]; then
            SYSTEM_NUMPY=no
            [ -d "$R/usr/lib/python3/dist-packages/picamera2" ] && SYSTEM_NUMPY=yes
        fi
        if [ "$SYSTEM_NUMPY" = yes ]; then
            sysnp=$(in_root python3 -c 'import numpy; print(numpy.__version__)' 2>/dev/null) ||
                die "--system-numpy: the system has no numpy (apt-get install python3-numpy)"
            printf 'numpy==%s\nopencv-python-headless<4.12\n' "$sysnp" >"$R$APP/constraints.txt"
            step "$APP/constraints.txt" "the system's numpy $sysnp, and OpenCV 4.11, which takes it"
        fi
        in_root "$APP/venv/bin/pip" install -q --disable-pip-version-check \
            -c "$APP/constraints.txt" "$APP/src$extra"
        changed "$APP/venv" "patrol-agent $(in_root "$APP/venv/bin/patrol-agent" --version | cut -d' ' -f2)"
    else
        step "$APP/venv" unchanged
    fi
fi

# --- the service ---------------------------------------------------------------------------
t=$(mktemp); cp "$SRC/systemd/patrol-agent.service" "$t"
put "$t" /etc/systemd/system/patrol-agent.service 0644
WANTS=/etc/systemd/system/multi-user.target.wants/patrol-agent.service
if [ -L "$R$WANTS" ]; then
    step "patrol-agent.service" "enabled already"
else
    if [ -z "$R" ]; then systemctl enable patrol-agent.service >/dev/null 2>&1
    else systemctl --root="$ROOT" enable patrol-agent.service >/dev/null 2>&1; fi
    changed "patrol-agent.service" "enabled: it starts at boot"
fi
if [ -z "$R" ] && [ -d /run/systemd/system ] && [ "$changes" -gt 0 ]; then
    systemctl daemon-reload
    systemctl restart patrol-agent.service && step "patrol-agent.service" "restarted"
fi

# --- optional: a root file system safer against power cuts ---------------------------
if [ "$POWER_SAFE" = 1 ]; then
    CMDLINE=/boot/firmware/cmdline.txt
    if [ ! -f "$R$CMDLINE" ]; then
        skipped "$CMDLINE" "no Raspberry Pi boot partition here"
    elif grep -q 'fsck.repair=yes' "$R$CMDLINE"; then
        step "$CMDLINE" "unchanged (fsck.repair=yes)"
    else
        sed 's/$/ fsck.repair=yes/' "$R$CMDLINE" | text "$CMDLINE" 0755
    fi
    # A swap file on the card wears it and is written mid-flight when the power goes.
    if [ -L "$R/etc/systemd/system/dphys-swapfile.service" ]; then
        step "dphys-swapfile.service" "masked already"
    else
        mkdir -p "$R/etc/systemd/system"
        ln -sf /dev/null "$R/etc/systemd/system/dphys-swapfile.service"
        changed "dphys-swapfile.service" "masked (no swap file on the card)"
    fi
fi

echo
if [ "$changes" = 0 ]; then
    echo "nothing changed: unit $DEVICE_ID ($VEHICLE) was already set up as asked"
else
    echo "$changes changes; unit $DEVICE_ID ($VEHICLE) set up, broker $BROKER_HOST:$BROKER_PORT"
fi
if [ "$TLS" = 1 ] && [ ! -s "$R/etc/patrol-agent/tls/client.crt" ]; then
    echo "next: have the office sign $CSR, then run this again with --cert FILE"
fi
