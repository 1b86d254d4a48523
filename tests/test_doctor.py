"""``patrol-agent doctor`` against real parts: a camera (the sample video), a real gpsd
through gpsfake, a real Mosquitto; and each part broken in turn."""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Gpsfake, Mosquitto, agent_cmd, free_port, unit_config

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "drive"


def doctor(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(agent_cmd("doctor", "--config", str(config)), capture_output=True,
                          text=True, timeout=120)


def line(out: str, part: str) -> str:
    """The check's line (and its advice, if any)."""
    lines = out.splitlines()
    for i, ln in enumerate(lines):
        if ln[6:14].strip() == part:
            advice = lines[i + 1].strip() if i + 1 < len(lines) and \
                lines[i + 1].startswith(" " * 14) else ""
            return ln + ("\n" + advice if advice else "")
    raise AssertionError(f"no {part} line in:\n{out}")


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[tuple[Mosquitto, Gpsfake]]:
    broker = Mosquitto(tmp_path / "broker").start()
    fake = Gpsfake(SAMPLE / "track.nmea", cycle_s=0.1, loop=True).start()
    fake.wait_reporting()  # the receiver is working before the doctor looks
    yield broker, fake
    fake.stop()
    broker.stop(signal.SIGKILL)


def test_a_unit_with_every_part_working_is_well(tmp_path: Path, parts: tuple) -> None:
    broker, fake = parts
    cfg = unit_config(tmp_path / "a.toml", device="unit", camera=str(SAMPLE / "video.mp4"),
                      db=tmp_path / "outbox.db", gps_port=fake.port, broker_port=broker.port)
    r = doctor(cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    assert line(r.stdout, "model").startswith("ok")
    assert "gives 640x360 frames" in line(r.stdout, "camera")
    assert line(r.stdout, "gps").startswith("ok") and "fix at 37.65" in r.stdout
    # the log is from 2025: the system clock looks far off GPS time, which is said
    assert line(r.stdout, "clock").startswith("warn") and "off GPS time" in r.stdout
    assert "accepts this unit" in line(r.stdout, "broker")
    assert "all is well" in r.stdout


def test_each_broken_part_is_named_with_what_to_do(tmp_path: Path) -> None:
    bad_model = tmp_path / "model.tflite"
    bad_model.write_bytes(b"\0" * 1000)
    cfg = unit_config(tmp_path / "a.toml", device="unit", camera="/no/such/video.mp4",
                      db=tmp_path / "outbox.db", gps_port=free_port(),
                      broker_port=free_port(), extra=f'[detector]\nmodel = "{bad_model}"\n')
    r = doctor(cfg)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "not a usable TFLite model" in line(r.stdout, "model")
    assert "no such file, folder or device" in line(r.stdout, "camera")
    gps = line(r.stdout, "gps")
    assert gps.startswith("FAIL") and "does not answer" in gps and "systemctl status gpsd" in gps
    assert "cannot connect" in line(r.stdout, "broker")
    assert "4 part(s) need attention" in r.stdout and "Traceback" not in r.stderr


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None and
                    not Path("/usr/bin/mosquitto_passwd").exists(),
                    reason="needs mosquitto_passwd (Debian package mosquitto)")
def test_a_broker_that_refuses_the_unit_says_so(tmp_path: Path) -> None:
    pw = tmp_path / "passwd"
    subprocess.run([shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd", "-b", "-c",
                    str(pw), "unit", "right-one"], check=True)
    broker = Mosquitto(tmp_path / "broker", extra_conf=f"allow_anonymous false\n"
                       f"password_file {pw}\n").start()
    secret = tmp_path / "mqtt-password"
    secret.write_text("wrong-one\n")
    try:
        cfg = unit_config(tmp_path / "a.toml", device="unit", camera=None,
                          db=tmp_path / "outbox.db", broker_port=broker.port)
        cfg.write_text(cfg.read_text() + f'username = "unit"\npassword_file = "{secret}"\n')
        r = doctor(cfg)
    finally:
        broker.stop(signal.SIGKILL)
    assert r.returncode == 1
    broker_line = line(r.stdout, "broker")
    assert "refused the connection" in broker_line and "password credential" in broker_line
    assert "wrong-one" not in r.stdout + r.stderr
