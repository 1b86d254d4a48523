#!/usr/bin/env bash
# The fleet's certificate authority and the broker's accounts, with openssl and
# mosquitto_passwd only (no network). Run it on the office machine that keeps the CA,
# not on a unit:
#
#   make-ca.sh [--dir DIR] ca [--name NAME] [--days N]
#       a CA (EC P-256 key, self-signed), its openssl database and an empty CRL
#   make-ca.sh [--dir DIR] server --host NAME [--host NAME...] [--ip ADDR...] [--days N]
#       the broker's key and certificate, with those names (the address the units dial)
#   make-ca.sh [--dir DIR] sign-unit CSR [--days N]
#       signs a unit's CSR (provision.sh makes it on the unit as
#       /etc/patrol-agent/tls/ID.csr; the key never leaves the unit). Its CN, the device
#       id, becomes the unit's MQTT user name (use_identity_as_username): units/ID.crt
#   make-ca.sh [--dir DIR] revoke-unit ID
#       revokes every certificate signed for ID and writes crl.pem again
#   make-ca.sh [--dir DIR] crl
#       writes crl.pem again from the database
#   make-ca.sh [--dir DIR] account NAME [--password-file FILE]
#       a password account: the office's (office-collector, office-fleet: any office-*
#       name) in DIR/office.passwd, a unit without a certificate (NAME: its device id)
#       in DIR/units.passwd. The password is FILE's first line, else a new random one
#       kept in DIR/accounts/NAME.password (mode 0600)
#   make-ca.sh [--dir DIR] remove-account NAME
#
# DIR (default ./patrol-pki) holds: ca.key (0600) and ca.pem, crl.pem, server.key and
# server.crt, units/ID.crt, office.passwd, units.passwd, accounts/, and openssl's
# database (openssl.cnf, index.txt, serial, crlnumber, issued/). Each step says what it
# made, or that it was there already; docs/broker.md says what goes to the broker.
set -euo pipefail

DIR=./patrol-pki
die() { echo "make-ca.sh: $*" >&2; exit 2; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --dir) DIR=${2:?}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) break ;;
    esac
done
[ $# -gt 0 ] || { usage >&2; exit 2; }
CMD=$1; shift
command -v openssl >/dev/null || die "needs openssl"
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
CNF="$DIR/openssl.cnf"

# A device id as provision.sh allows it, and not a name the ACL gives another meaning:
# "fleet" is the fleet's own topic level ({root}/fleet/config/desired), office-* are
# the office's accounts.
check_unit_id() {
    case "$1" in
        ""|*[!A-Za-z0-9_.-]*) die "'$1' is not a device id (only letters, digits, . _ -)" ;;
        fleet|office-*) die "'$1' cannot be a unit: the ACL gives that name another meaning" ;;
    esac
}
check_account() {
    case "$1" in
        ""|*[!A-Za-z0-9_.-]*) die "'$1': an account name is letters, digits, . _ - only" ;;
        fleet) die "'fleet' cannot be an account: it is the fleet's own topic level" ;;
    esac
}
need_ca() { [ -s "$DIR/ca.key" ] && [ -s "$CNF" ] || die "no CA in $DIR: run '$0 --dir $DIR ca' first"; }
gencrl() {
    openssl ca -config "$CNF" -gencrl -out "$DIR/crl.pem.tmp" 2>/dev/null ||
        die "openssl ca -gencrl failed"
    mv "$DIR/crl.pem.tmp" "$DIR/crl.pem"
    chmod 644 "$DIR/crl.pem"
}

cmd_ca() {
    local name="patrol fleet CA" days=3650
    while [ $# -gt 0 ]; do
        case "$1" in
            --name) name=${2:?}; shift 2 ;;
            --days) days=${2:?}; shift 2 ;;
            *) die "ca: unknown option $1" ;;
        esac
    done
    if [ -s "$DIR/ca.key" ]; then
        echo "  $DIR/ca.pem  unchanged (a CA is there already; a new one would lock out every unit)"
        return
    fi
    mkdir -p "$DIR/issued" "$DIR/units" "$DIR/accounts"
    chmod 700 "$DIR/accounts"
    cat >"$CNF" <<CNF
# openssl ca's settings for the patrol fleet's CA (written by make-ca.sh).
[ ca ]
default_ca = patrol_ca

[ patrol_ca ]
dir = $DIR
database = \$dir/index.txt
new_certs_dir = \$dir/issued
certificate = \$dir/ca.pem
private_key = \$dir/ca.key
serial = \$dir/serial
crlnumber = \$dir/crlnumber
default_md = sha256
default_days = 825
# The CRL is read only by our own broker, from its disk: a long validity, so that a
# CRL nobody renewed never locks the whole fleet out (OpenSSL refuses every
# certificate once the CRL's nextUpdate has passed).
default_crl_days = 3650
policy = policy_unit
# A unit re-flashed makes a new key and CSR with the same subject.
unique_subject = no
copy_extensions = none
email_in_dn = no
crl_extensions = crl_ext

[ policy_unit ]
organizationName = optional
organizationalUnitName = optional
commonName = supplied

[ unit_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[ crl_ext ]
authorityKeyIdentifier = keyid
CNF
    : >"$DIR/index.txt"
    echo "unique_subject = no" >"$DIR/index.txt.attr"
    openssl rand -hex 16 >"$DIR/serial"
    echo 1000 >"$DIR/crlnumber"
    (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
        -out "$DIR/ca.key" 2>/dev/null)
    openssl req -new -x509 -key "$DIR/ca.key" -sha256 -days "$days" -subj "/O=patrol/CN=$name" \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -addext "subjectKeyIdentifier=hash" -out "$DIR/ca.pem" 2>/dev/null
    gencrl
    # Both password files exist from the start: Mosquitto will not start without a file
    # its config names, and an empty one lets nobody in.
    (umask 077 && : >"$DIR/office.passwd" && : >"$DIR/units.passwd")
    echo "  $DIR/ca.pem  made ($name, $days days); its key ca.key stays here, mode 0600"
    echo "  $DIR/crl.pem  made (nothing revoked)"
    echo "  $DIR/office.passwd, units.passwd  made, empty (add accounts with 'account NAME')"
}

cmd_server() {
    local days=825 san="" cn=""
    while [ $# -gt 0 ]; do
        case "$1" in
            --host) san="${san:+$san,}DNS:${2:?}"; cn=${cn:-$2}; shift 2 ;;
            --ip) san="${san:+$san,}IP:${2:?}"; cn=${cn:-$2}; shift 2 ;;
            --days) days=${2:?}; shift 2 ;;
            *) die "server: unknown option $1" ;;
        esac
    done
    [ -n "$san" ] || die "server: give --host NAME (and/or --ip ADDR): the name the units dial"
    need_ca
    local ext csr
    ext=$(mktemp) csr=$(mktemp)
    printf '[server_ext]\nbasicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature, keyEncipherment\nextendedKeyUsage = serverAuth\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\nsubjectAltName = %s\n' \
        "$san" >"$ext"
    if [ ! -s "$DIR/server.key" ]; then
        (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
            -out "$DIR/server.key" 2>/dev/null)
    fi
    openssl req -new -key "$DIR/server.key" -subj "/O=patrol/CN=$cn" -out "$csr" 2>/dev/null
    openssl ca -config "$CNF" -batch -notext -days "$days" -extfile "$ext" \
        -extensions server_ext -in "$csr" -out "$DIR/server.crt" 2>/dev/null ||
        { rm -f "$ext" "$csr"; die "openssl ca could not sign the server's certificate"; }
    rm -f "$ext" "$csr"
    echo "  $DIR/server.crt  made for $san ($days days); key server.key"
}

cmd_sign_unit() {
    local csr="" days=825
    while [ $# -gt 0 ]; do
        case "$1" in
            --days) days=${2:?}; shift 2 ;;
            -*) die "sign-unit: unknown option $1" ;;
            *) csr=$1; shift ;;
        esac
    done
    [ -n "$csr" ] && [ -f "$csr" ] || die "sign-unit: give the unit's CSR file"
    need_ca
    openssl req -in "$csr" -noout -verify >/dev/null 2>&1 ||
        die "$csr: not a CSR, or its signature does not match its key"
    local cn
    cn=$(openssl req -in "$csr" -noout -subject -nameopt multiline |
        sed -n 's/^ *commonName *= *//p')
    [ "$(printf '%s\n' "$cn" | wc -l)" = 1 ] || die "$csr: one CN, the device id, is expected"
    check_unit_id "$cn"
    mkdir -p "$DIR/units"
    openssl ca -config "$CNF" -batch -notext -days "$days" -extensions unit_ext \
        -in "$csr" -out "$DIR/units/$cn.crt.tmp" 2>/dev/null ||
        die "openssl ca could not sign $csr"
    mv "$DIR/units/$cn.crt.tmp" "$DIR/units/$cn.crt"
    echo "  $DIR/units/$cn.crt  signed: MQTT user $cn ($days days)"
    echo "  on the unit: provisioning/provision.sh ... --cert $cn.crt --ca ca.pem"
}

cmd_revoke_unit() {
    local id=${1:-}
    check_unit_id "$id"
    need_ca
    # Every valid certificate the CA signed with CN=id (a re-flashed unit may have several).
    local serials n=0 s
    serials=$(awk -F'\t' -v id="$id" '$1 == "V" {
            t = "/CN=" id; if (substr($6, length($6) - length(t) + 1) == t) print $4 }' \
        "$DIR/index.txt")
    for s in $serials; do
        openssl ca -config "$CNF" -revoke "$DIR/issued/$s.pem" -crl_reason keyCompromise \
            >/dev/null 2>&1 || die "could not revoke serial $s"
        n=$((n + 1))
    done
    gencrl
    if [ "$n" = 0 ]; then
        echo "  no valid certificate for $id; $DIR/crl.pem written again"
    else
        echo "  $id: $n certificate(s) revoked; $DIR/crl.pem written: install it on the broker"
    fi
}

# The password file an account belongs in: the office's (office-*) or the units'.
passwd_of() {
    case "$1" in
        office-*) echo "$DIR/office.passwd" ;;
        *) check_unit_id "$1"; echo "$DIR/units.passwd" ;;
    esac
}

cmd_account() {
    local name=${1:-} pwfile="" pw file
    shift || true
    while [ $# -gt 0 ]; do
        case "$1" in
            --password-file) pwfile=${2:?}; shift 2 ;;
            *) die "account: unknown option $1" ;;
        esac
    done
    check_account "$name"
    file=$(passwd_of "$name")
    command -v mosquitto_passwd >/dev/null || die "needs mosquitto_passwd (Debian: mosquitto)"
    mkdir -p "$DIR/accounts"
    chmod 700 "$DIR/accounts"
    if [ -n "$pwfile" ]; then
        [ -f "$pwfile" ] || die "--password-file $pwfile: no such file"
        pw=$(head -n1 "$pwfile")
        [ -n "$pw" ] || die "--password-file $pwfile: empty"
    else
        pw=$(openssl rand -base64 24)
        (umask 077 && printf '%s\n' "$pw" >"$DIR/accounts/$name.password")
    fi
    [ -f "$file" ] || (umask 077 && : >"$file")
    # Read from standard input, so the password is never on a command line (ps).
    printf '%s\n%s\n' "$pw" "$pw" | mosquitto_passwd "$file" "$name" >/dev/null 2>&1 ||
        die "mosquitto_passwd failed for $name"
    if [ -n "$pwfile" ]; then
        echo "  $file  account $name, password from $pwfile"
    else
        echo "  $file  account $name; its password is in $DIR/accounts/$name.password"
    fi
}

cmd_remove_account() {
    local name=${1:-} file
    check_account "$name"
    file=$(passwd_of "$name")
    if [ -f "$file" ] && grep -q "^$name:" "$file"; then
        mosquitto_passwd -D "$file" "$name" >/dev/null
        rm -f "$DIR/accounts/$name.password"
        echo "  $file  account $name removed"
    else
        echo "  $file  no account $name"
    fi
}

case "$CMD" in
    ca) cmd_ca "$@" ;;
    server) cmd_server "$@" ;;
    sign-unit) cmd_sign_unit "$@" ;;
    revoke-unit) cmd_revoke_unit "$@" ;;
    crl) need_ca; gencrl; echo "  $DIR/crl.pem  written" ;;
    account) cmd_account "$@" ;;
    remove-account) cmd_remove_account "$@" ;;
    *) die "unknown command $CMD (see --help)" ;;
esac
