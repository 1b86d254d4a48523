"""Benchmark: the whole pipeline against the bare interpreter and a single-threaded loop,
on the bundled sample drive and the default model (``patrol-agent bench``; agent/bench.py
says what each figure is). Prints the table, asserts nothing.

    python benchmarks/bench_pipeline.py [--json FILE] [--threads N] [--model M] ...
    python benchmarks/bench_pipeline.py --write     # also into the README's table
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "models"))

import sections  # noqa: E402  (models/sections.py)

from agent.bench import table  # noqa: E402
from agent.cli import main as agent_main  # noqa: E402


def main(argv: list[str]) -> int:
    write = "--write" in argv
    argv = [a for a in argv if a != "--write"]
    if not write:
        return agent_main(["bench", *argv])
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        rc = agent_main(["bench", "--json", str(out), *argv])
        if rc:
            return rc
        r = json.loads(out.read_text())
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    text = "\n".join([
        sections.markers("bench")[0],
        "Written by `python benchmarks/bench_pipeline.py --write` "
        f"({datetime.now(UTC):%Y-%m-%d}, {r['cpus']} CPUs, {cpu}, Python "
        f"{platform.python_version()}); do not edit by hand.", "",
        table(r), sections.markers("bench")[1]])
    return sections.publish(ROOT / "README.md", "bench", text, write=True, check=False,
                            fix="python benchmarks/bench_pipeline.py --write")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
