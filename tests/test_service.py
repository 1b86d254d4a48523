"""The systemd unit: systemd's own checker accepts it, its security exposure is what
docs/service.md says, and its settings fit what the agent does."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import DEFAULT_CONFIG_PATH, Config
from agent.pipeline import STOP_BUDGET_S

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "patrol-agent.service"
ANALYZE = shutil.which("systemd-analyze")

needs_systemd = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed "
                                   "(Debian package systemd; .ci/run installs it)")


def settings(path: Path = UNIT) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values (a unit may give a key several times)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out[section] = {}
        else:
            key, _, value = line.partition("=")
            out[section].setdefault(key, []).append(value)
    return out


def _installed_copy(tmp_path: Path) -> Path:
    """The unit as provisioning installs it, its ExecStart pointing at this checkout's
    agent (systemd-analyze checks that the program exists)."""
    exe = Path(sys.executable).parent / "patrol-agent"
    assert exe.exists(), exe
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/patrol-agent/venv/bin/patrol-agent",
                                             str(exe)))
    return unit


@needs_systemd
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    r = subprocess.run([str(ANALYZE), "verify", str(_installed_copy(tmp_path))],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr


@needs_systemd
def test_the_security_exposure_is_what_the_docs_say(tmp_path: Path) -> None:
    r = subprocess.run([str(ANALYZE), "security", "--offline=yes",
                        str(_installed_copy(tmp_path))], capture_output=True, text=True,
                       timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", r.stdout)
    assert m, r.stdout + r.stderr
    score, verdict = float(m.group(1)), m.group(2)
    print(f"exposure {score} {verdict}")
    assert score <= 2.0 and verdict == "OK"
    doc = (ROOT / "docs" / "service.md").read_text()
    stated = re.search(r"exposure level \*\*([\d.]+) (\w+)\*\*", doc)
    assert stated and (float(stated.group(1)), stated.group(2)) == (score, verdict)


def test_the_unit_fits_the_agent() -> None:
    s = settings()["Service"]
    one = {k: v[-1] for k, v in s.items()}
    assert one["Type"] == "notify" and one["Restart"] == "always"
    assert one["ExecStart"].endswith(f"run --config {DEFAULT_CONFIG_PATH}")
    # an orderly stop fits, and systemd does not give up restarting
    assert int(one["TimeoutStopSec"]) > STOP_BUDGET_S
    assert settings()["Unit"]["StartLimitIntervalSec"] == ["0"]
    # the watchdog is on, and a stall is noticed before many intervals go by
    assert 0 < int(one["WatchdogSec"]) <= Config().health.stall_s
    assert one["User"] == "patrol-agent"
    assert set(one["SupplementaryGroups"].split()) == {"video", "render", "dialout"}
    # state where the default store lives; secrets handed over, not read from disk
    assert Path("/var/lib") / one["StateDirectory"] == Config().store.path.parent
    creds = {v.split(":")[0] for v in s["LoadCredential"]}
    assert creds == {"mqtt-password", "mqtt-client-key"}
    for key, want in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                      ("ProtectHome", "yes"), ("PrivateTmp", "yes")):
        assert one[key] == want, key
    assert one["MemoryMax"] and one["CPUWeight"]


@needs_systemd
def test_systemd_accepts_the_office_unit(tmp_path: Path) -> None:
    office = ROOT / "systemd" / "patrol-office.service"
    exe = Path(sys.executable).parent / "patrol-office"
    assert exe.exists(), exe
    unit = tmp_path / office.name
    unit.write_text(office.read_text().replace("/opt/patrol-office/venv/bin/patrol-office",
                                               str(exe)))
    r = subprocess.run([str(ANALYZE), "verify", str(unit)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
    # It runs the command the docs give, with the config where the docs put it.
    assert "patrol-office serve --config /etc/patrol-office/office.toml" in office.read_text()
