"""provisioning/provision.sh into a temporary root: what it writes, that a second run
changes nothing, the office signing the unit's CSR, and a fleet file."""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from agent.config import Config, parse_config
from agent.uplink import build_tls_context

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "provisioning" / "provision.sh"

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("systemd-sysusers") is None,
                                reason="provisioning needs root and systemd-sysusers")


@pytest.fixture
def sd_card(tmp_path: Path) -> Path:
    """A Pi's root as the script finds it: accounts, and the board serial the kernel shows."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc" / "group").write_text("root:x:0:\nvideo:x:44:\ndialout:x:20:\n")
    (root / "proc" / "device-tree").mkdir(parents=True)
    (root / "proc" / "device-tree" / "serial-number").write_bytes(b"10000000a1b2c3d4\0")
    return root


def provision(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), "--root", str(root), *args], capture_output=True,
                          text=True, timeout=120)


def config(root: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    """The config as the service loads it on the unit: credentials where systemd puts
    them, and the unit's /etc/patrol-agent files found under ``root``."""
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(root / "etc/patrol-agent/credentials"))
    data = tomllib.loads((root / "etc/patrol-agent/agent.toml").read_text())
    tls = (data.get("mqtt") or {}).get("tls") or {}
    for key in ("ca_file", "cert_file"):
        if key in tls:
            tls[key] = str(root / tls[key].lstrip("/"))
    return parse_config(data)


def snapshot(root: Path) -> dict[str, tuple[float, int]]:
    """Every file and link under root, with when it was written and its mode."""
    return {str(p.relative_to(root)): (p.lstat().st_mtime, p.lstat().st_mode)
            for p in root.rglob("*") if not p.is_dir() or p.is_symlink()}


def test_a_unit_is_set_up_from_its_serial_and_a_second_run_changes_nothing(
        sd_card: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = provision(sd_card, "--vehicle", "van 42", "--broker", "mqtt.city.example")
    assert first.returncode == 0, first.stderr
    cfg = config(sd_card, monkeypatch)
    assert cfg.device.id == "pi-a1b2c3d4" and cfg.device.name == "van 42"
    assert cfg.mqtt is not None and cfg.mqtt.host == "mqtt.city.example"
    assert cfg.mqtt.effective_port == 8883 and cfg.mqtt.tls is not None
    assert str(cfg.store.path) == "/var/lib/patrol-agent/outbox.db"
    etc = sd_card / "etc"
    passwd = (etc / "passwd").read_text()
    assert "patrol-agent:x:" in passwd and "/usr/sbin/nologin" in passwd
    groups = {line.split(":")[0]: line.split(":")[3] for line in
              (etc / "group").read_text().splitlines()}
    assert all("patrol-agent" in groups[g] for g in ("video", "render", "dialout"))
    unit = etc / "systemd/system/patrol-agent.service"
    assert unit.read_text() == (ROOT / "systemd/patrol-agent.service").read_text()
    assert os.readlink(etc / "systemd/system/multi-user.target.wants/patrol-agent.service") \
        == "/etc/systemd/system/patrol-agent.service"
    key = etc / "patrol-agent/credentials/mqtt-client-key"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    csr = etc / "patrol-agent/tls/pi-a1b2c3d4.csr"
    subject = subprocess.run(["openssl", "req", "-in", str(csr), "-noout", "-subject"],
                             capture_output=True, text=True).stdout
    assert "CN = pi-a1b2c3d4" in subject and "OU = van 42" in subject
    assert "SystemMaxUse=64M" in (etc / "systemd/journald.conf.d/patrol-agent.conf").read_text()
    assert 'GPSD_OPTIONS="-n"' in (etc / "default/gpsd").read_text()
    assert (sd_card / "opt/patrol-agent/src/agent/pipeline.py").exists()
    assert "skipped: no Debian system" in first.stdout  # a plain directory has no apt-get
    assert "next: have the office sign /etc/patrol-agent/tls/pi-a1b2c3d4.csr" in first.stdout

    before = snapshot(sd_card)
    second = provision(sd_card, "--vehicle", "van 42", "--broker", "mqtt.city.example")
    assert second.returncode == 0, second.stderr
    assert "nothing changed: unit pi-a1b2c3d4 (van 42) was already set up" in second.stdout
    assert snapshot(sd_card) == before


def _ca(tmp_path: Path) -> tuple[Path, Path]:
    ca_key, ca_crt = tmp_path / "ca.key", tmp_path / "ca.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(ca_key), "-out",
                    str(ca_crt), "-days", "2", "-subj", "/CN=city fleet CA"],
                   check=True, capture_output=True)
    return ca_key, ca_crt


def _sign(csr: Path, ca: tuple[Path, Path], out: Path) -> Path:
    subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca[1]), "-CAkey",
                    str(ca[0]), "-CAcreateserial", "-days", "1", "-out", str(out)],
                   check=True, capture_output=True)
    return out


def test_the_office_signs_the_csr_and_the_certificate_goes_in(
        sd_card: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The key is made on the unit; the office signs its CSR; a second run with the
    certificate installs it and the agent's TLS set-up loads the pair."""
    assert provision(sd_card, "--vehicle", "v1", "--broker", "b:8883",
                     "--device-id", "unit-7").returncode == 0
    ca = _ca(tmp_path)
    crt = _sign(sd_card / "etc/patrol-agent/tls/unit-7.csr", ca, tmp_path / "unit-7.crt")
    r = provision(sd_card, "--vehicle", "v1", "--broker", "b:8883", "--cert", str(crt),
                  "--ca", str(ca[1]))
    assert r.returncode == 0, r.stderr
    assert "/etc/patrol-agent/tls/client.crt" in r.stdout and "next:" not in r.stdout
    cfg = config(sd_card, monkeypatch)
    assert cfg.mqtt is not None and cfg.mqtt.tls is not None
    assert cfg.mqtt.tls.key_file == sd_card / "etc/patrol-agent/credentials/mqtt-client-key"
    assert cfg.mqtt.tls.cert_file == sd_card / "etc/patrol-agent/tls/client.crt"
    build_tls_context(cfg.mqtt.tls)  # the certificate is for the key made on the unit

    other = tmp_path / "other.key"
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-out", str(other)], check=True)
    subprocess.run(["openssl", "req", "-new", "-key", str(other), "-subj", "/CN=x", "-out",
                    str(tmp_path / "x.csr")], check=True)
    wrong = _sign(tmp_path / "x.csr", ca, tmp_path / "x.crt")
    r = provision(sd_card, "--vehicle", "v1", "--broker", "b:8883", "--cert", str(wrong))
    assert r.returncode == 2 and "is not for this unit's key" in r.stderr


def test_a_fleet_file_sets_up_each_vehicle_from_its_row(
        sd_card: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = tmp_path / "fleet.csv"
    fleet.write_text("vehicle,device_id,broker,camera,gps_device,gps_baud\n"
                     "van-41,unit-41,mqtt-a.city.example:8883,0,,\n"
                     "van-42,unit-42,mqtt-b.city.example:9883,picamera2,/dev/serial0,9600\n")
    password = tmp_path / "pw"
    password.write_text("s3cret\n")
    r = provision(sd_card, "--fleet", str(fleet), "--vehicle", "van-42",
                  "--password-file", str(password))
    assert r.returncode == 0, r.stderr
    cfg = config(sd_card, monkeypatch)
    assert (cfg.device.id, cfg.device.name) == ("unit-42", "van-42")
    assert cfg.mqtt is not None and (cfg.mqtt.host, cfg.mqtt.port) == ("mqtt-b.city.example",
                                                                       9883)
    assert cfg.mqtt.username == "unit-42" and cfg.camera.kind == "picamera2"
    assert cfg.mqtt.password is not None and cfg.mqtt.password.get_secret_value() == "s3cret"
    gpsd = (sd_card / "etc/default/gpsd").read_text()
    assert 'DEVICES="/dev/serial0"' in gpsd and 'GPSD_OPTIONS="-n -s 9600"' in gpsd
    missing = provision(sd_card, "--fleet", str(fleet), "--vehicle", "van-99")
    assert missing.returncode == 2 and "no row for vehicle 'van-99'" in missing.stderr


def test_without_a_serial_or_an_id_it_says_what_to_give(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    r = provision(root, "--vehicle", "v", "--broker", "b")
    assert r.returncode == 2 and "give --device-id" in r.stderr
