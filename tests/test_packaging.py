"""What a unit gets from a plain ``pip install`` (provisioning's): the default model
travels with the package (provisioning/prove-on-arm64.sh runs such an install)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_carries_the_default_model_where_the_agent_looks(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                        str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (wheel,) = tmp_path.glob("patrol_agent-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    data = "patrol_agent-0.1.0.data/data/share/patrol-agent/"
    for f in ("models/civil-complaint.tflite", "models/civil-complaint.labels.txt"):
        assert data + f in names, names
        assert (ROOT / f).read_bytes() == zipfile.ZipFile(wheel).read(data + f)
