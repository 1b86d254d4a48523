"""TLS with a client certificate against a real Mosquitto; certificates made here."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.cli import main
from agent.config import load_config
from agent.pipeline import Pipeline
from agent.store import Store
from tests.conftest import Mosquitto, free_port, listening, make_event, wait_until, write_config


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path, password: bytes | None = None) -> None:
    enc = (serialization.BestAvailableEncryption(password) if password
           else serialization.NoEncryption())
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8, enc))


def make_ca(d: Path, cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(key, hashes.SHA256()))
    (d / f"{cn}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def make_leaf(d: Path, name: str, ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
              server: bool, password: bytes | None = None) -> tuple[Path, Path]:
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    b = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(ca_cert.subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5))
         .not_valid_after(now + dt.timedelta(days=1)))
    if server:
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    cert = b.sign(ca_key, hashes.SHA256())
    cert_path, key_path = d / f"{name}.crt", d / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, key_path, password)
    return cert_path, key_path


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    d = tmp_path / "pki"
    d.mkdir()
    ca = make_ca(d, "city-ca")
    make_ca(d, "other-ca")
    srv_crt, srv_key = make_leaf(d, "broker", ca, server=True)
    cli_crt, cli_key = make_leaf(d, "unit-1", ca, server=False, password=b"s3cret-pass")
    return {"ca": d / "city-ca.pem", "other_ca": d / "other-ca.pem", "srv_crt": srv_crt,
            "srv_key": srv_key, "cli_crt": cli_crt, "cli_key": cli_key}


@pytest.fixture
def tls_broker(tmp_path: Path, pki: dict[str, Path]) -> Iterator[Mosquitto]:
    tls_port = free_port()
    conf = (f"listener {tls_port} 127.0.0.1\ncafile {pki['ca']}\ncertfile {pki['srv_crt']}\n"
            f"keyfile {pki['srv_key']}\nrequire_certificate true\n")
    b = Mosquitto(tmp_path / "broker", extra_conf=conf).start()
    b.tls_port = tls_port  # type: ignore[attr-defined]
    wait_until(lambda: listening(tls_port), 10, "TLS listener")
    yield b
    b.stop(signal.SIGKILL)


def _tls_config(tmp_path: Path, port: int, ca: Path, pki: dict[str, Path]) -> Path:
    return write_config(tmp_path / "agent.toml", port, tmp_path / "outbox.db", mqtt_extra=(
        f'[mqtt.tls]\nca_file = "{ca}"\ncert_file = "{pki["cli_crt"]}"\n'
        f'key_file = "{pki["cli_key"]}"\n'))


def test_tls_with_client_certificate_delivers(tmp_path: Path, pki: dict[str, Path],
                                              tls_broker: Mosquitto, subscriber_factory,
                                              monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    sub = subscriber_factory(tls_broker.port)  # the plain listener, for the test only
    monkeypatch.setenv("PATROL_MQTT_KEY_PASSWORD", "s3cret-pass")
    cfg = load_config(_tls_config(tmp_path, tls_broker.tls_port, pki["ca"], pki))
    caplog.set_level(logging.INFO)
    pipe = Pipeline(cfg)
    pipe.start()
    try:
        ev = make_event(1)
        pipe.submit(ev)
        wait_until(lambda: ev.id in sub.event_ids(), 20, "event over TLS")
        with Store(tmp_path / "outbox.db") as s:
            wait_until(lambda: s.counts()["delivered"] == 1, 10, "marked delivered")
    finally:
        pipe.stop()
    assert "mqtts://127.0.0.1" in caplog.text
    assert "s3cret-pass" not in caplog.text


def test_tls_wrong_ca_fails_with_a_clear_error(tmp_path: Path, pki: dict[str, Path],
                                               tls_broker: Mosquitto,
                                               monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("PATROL_MQTT_KEY_PASSWORD", "s3cret-pass")
    cfg = load_config(_tls_config(tmp_path, tls_broker.tls_port, pki["other_ca"], pki))
    caplog.set_level(logging.WARNING)
    pipe = Pipeline(cfg)
    pipe.start()
    try:
        pipe.submit(make_event(1))
        assert pipe.uplink is not None
        wait_until(lambda: "not trusted" in pipe.uplink.stats.last_error, 10, "TLS failure")
        time.sleep(0.5)
    finally:
        pipe.stop()
    assert "certificate is not trusted" in caplog.text
    assert "mqtt.tls.ca_file" in caplog.text and "other-ca.pem" in caplog.text
    with Store(tmp_path / "outbox.db") as s:
        assert s.counts() == {"pending": 1, "delivered": 0}


def test_check_config_catches_a_wrong_key_passphrase(tmp_path: Path, pki: dict[str, Path],
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATROL_MQTT_KEY_PASSWORD", "not-the-pass-7731")
    path = _tls_config(tmp_path, 8883, pki["ca"], pki)
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "key passphrase" in err and "unit-1.key" in err
    assert "not-the-pass-7731" not in err
