#!/usr/bin/env bash
# Re-vendors the map page's browser libraries from the npm registry: packs each
# package with `npm pack` in a temporary directory, copies only the dist files the
# page loads (and each package's licence) here, and prints each tarball's sha512
# integrity for README.md. Nothing is fetched at run time: the office serves these
# files itself, so the page works with no internet.
#
#   office/static/vendor/update.sh                      # the versions below
#   LEAFLET=1.9.5 office/static/vendor/update.sh         # an upgrade
#
# After an upgrade: update the table in README.md, load the page and run
# tests/test_office_page.py.
set -euo pipefail

LEAFLET=${LEAFLET:-1.9.4}
MARKERCLUSTER=${MARKERCLUSTER:-1.5.3}
HEAT=${HEAT:-0.2.0}

here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cd "$work"
npm pack --silent --json "leaflet@$LEAFLET" "leaflet.markercluster@$MARKERCLUSTER" \
    "leaflet.heat@$HEAT" > pack.json
for tgz in *.tgz; do
    mkdir "${tgz%.tgz}"
    tar xzf "$tgz" -C "${tgz%.tgz}"
done

l="$work/leaflet-$LEAFLET/package"
m="$work/leaflet.markercluster-$MARKERCLUSTER/package"
h="$work/leaflet.heat-$HEAT/package"

rm -rf "$here/leaflet" "$here/leaflet.markercluster" "$here/leaflet.heat"
mkdir -p "$here/leaflet/images" "$here/leaflet.markercluster" "$here/leaflet.heat"

cp "$l/dist/leaflet.js" "$l/dist/leaflet.css" "$l/LICENSE" "$here/leaflet/"
cp "$l"/dist/images/*.png "$here/leaflet/images/"
cp "$m/dist/leaflet.markercluster.js" "$m/dist/MarkerCluster.css" \
   "$m/dist/MarkerCluster.Default.css" "$here/leaflet.markercluster/"
cp "$m/MIT-LICENCE.txt" "$here/leaflet.markercluster/LICENSE"
cp "$h/dist/leaflet-heat.js" "$h/LICENSE" "$here/leaflet.heat/"

# The minified files end with a sourceMappingURL comment whose .map is not vendored;
# they are left byte for byte as packed (a browser asks for the map only with its
# developer tools open).
python3 - "$work/pack.json" <<'PY'
import json, sys
for p in json.load(open(sys.argv[1])):
    print(f"{p['name']}@{p['version']}  {p['integrity']}")
PY
