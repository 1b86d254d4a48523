#!/usr/bin/env bash
# Sets up .venv with the project and its test extras, then runs lint and the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[test]'
.venv/bin/ruff check agent office tests benchmarks samples models
.venv/bin/python -m pytest "$@"
