"""The typed config: bad input is named precisely, secrets never shown."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from agent.cli import main
from agent.config import Config, ConfigError, load_config, parse_config
from agent.store import Store
from tests.conftest import agent_cmd, make_event, write_config


def problems_of(tmp_path: Path, text: str) -> list[str]:
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    return e.value.problems


def test_defaults_make_a_valid_offline_config() -> None:
    cfg = Config()
    assert cfg.mqtt is None  # no broker configured: findings stay on the SD card
    assert cfg.store.path == Path("/var/lib/patrol-agent/outbox.db")
    # one interpreter thread per CPU it may use: four on a Pi 4/5, never more than it has
    assert cfg.detector.threads == 0 and cfg.detector.thread_count() == len(os.sched_getaffinity(0))


def test_unknown_key_is_named(tmp_path: Path) -> None:
    probs = problems_of(tmp_path, '[device]\nid = "u1"\ncolour = "red"\n')
    assert probs == ["device.colour: unknown key"]


def test_unknown_section_is_named(tmp_path: Path) -> None:
    assert problems_of(tmp_path, "[camra]\nfps = 5\n") == ["camra: unknown key"]


def test_wrong_type_names_key_and_value(tmp_path: Path) -> None:
    probs = problems_of(tmp_path, '[mqtt]\nhost = "b"\nport = "eighty"\n')
    assert len(probs) == 1
    assert probs[0].startswith("mqtt.port = 'eighty':")


def test_out_of_range_value(tmp_path: Path) -> None:
    probs = problems_of(tmp_path, "[mqtt]\nhost = \"b\"\nport = 70000\n[detector]\nthreads = 64\n")
    assert any(p.startswith("mqtt.port = 70000:") for p in probs)
    assert any(p.startswith("detector.threads = 64:") for p in probs)


def test_missing_broker_host(tmp_path: Path) -> None:
    assert problems_of(tmp_path, "[mqtt]\nport = 1883\n") == ["mqtt.host: required key is missing"]


def test_unreadable_ca_file(tmp_path: Path) -> None:
    ca = tmp_path / "nope.pem"
    probs = problems_of(tmp_path, f'[mqtt]\nhost = "b"\n[mqtt.tls]\nca_file = "{ca}"\n')
    assert probs == [f"mqtt.tls.ca_file = '{ca}': cannot read (No such file or directory)"]


def test_not_toml(tmp_path: Path) -> None:
    probs = problems_of(tmp_path, "[mqtt\nhost = b\n")
    assert probs[0].startswith("not valid TOML")


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    probs = problems_of(tmp_path, '[device]\nid = "has space"\n[store]\nretention_hours = -1\n'
                                  "[health]\nwatchdog = 3\n")
    assert {p.split(" ")[0] for p in probs} == {"device.id", "store.retention_hours",
                                                "health.watchdog"}


def test_secrets_from_env_and_file_are_masked_and_unhashed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pw_file = tmp_path / "pw"
    pw_file.write_text("from-file-123\n")
    data = {"mqtt": {"host": "b", "username": "u", "password_file": str(pw_file)}}
    cfg = parse_config(data)
    assert cfg.mqtt and cfg.mqtt.password
    assert cfg.mqtt.password.get_secret_value() == "from-file-123"
    assert "from-file-123" not in repr(cfg) and "from-file-123" not in json.dumps(cfg.masked())
    monkeypatch.setenv("PATROL_MQTT_PASSWORD", "from-env-456")
    cfg2 = parse_config(data)
    assert cfg2.mqtt and cfg2.mqtt.password
    assert cfg2.mqtt.password.get_secret_value() == "from-env-456"
    # the hash is of what matters to behaviour, never of a secret
    assert cfg.content_hash() == cfg2.content_hash()


def test_unreadable_password_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({"mqtt": {"host": "b", "password_file": str(tmp_path / "missing")}})
    assert "mqtt.password_file" in str(e.value)


def test_hash_is_stable_and_follows_content() -> None:
    a = parse_config({"device": {"id": "u1"}, "mqtt": {"host": "b"}})
    b = parse_config({"mqtt": {"host": "b"}, "device": {"id": "u1"}})
    c = parse_config({"device": {"id": "u1"}, "mqtt": {"host": "c"}})
    assert a.content_hash() == b.content_hash() != c.content_hash()


def test_tls_default_port_and_cert_key_pairing(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    cfg = parse_config({"mqtt": {"host": "b", "tls": {"ca_file": str(ca)}}})
    assert cfg.mqtt and cfg.mqtt.effective_port == 8883
    with pytest.raises(ConfigError) as e:
        parse_config({"mqtt": {"host": "b", "tls": {"cert_file": str(ca)}}})
    assert "mqtt.tls" in str(e.value) and "together" in str(e.value)


def test_check_config_cli_prints_masked_config(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "ok.toml"
    p.write_text('version = 7\n[device]\nid = "van-12"\n[mqtt]\nhost = "broker.city"\n'
                 'username = "van-12"\npassword = "hunter2-secret"\n')
    assert main(["check-config", str(p)]) == 0
    out, err = capsys.readouterr()
    shown = json.loads(out)
    assert shown["mqtt"]["password"] == "***" and shown["device"]["id"] == "van-12"
    assert "hunter2-secret" not in out + err
    assert "version 7" in err


def test_check_config_cli_exits_2_naming_each_bad_key(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text('[mqtt]\nport = "x"\npassword = "hunter2-secret"\n[gps]\nprot = 1\n')
    r = subprocess.run(agent_cmd("check-config", str(p)), capture_output=True, text=True)
    assert r.returncode == 2
    assert "mqtt.host: required key is missing" in r.stderr
    assert "mqtt.port = 'x'" in r.stderr
    assert "gps.prot: unknown key" in r.stderr
    assert "Traceback" not in r.stderr and "hunter2-secret" not in r.stderr


def test_run_with_bad_config_fails_at_once(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text("[store]\npath = 5\n")
    r = subprocess.run(agent_cmd("run", "--config", str(p)), capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 2
    assert "store.path = 5" in r.stderr and "Traceback" not in r.stderr


def test_the_shipped_example_config_is_valid() -> None:
    cfg = load_config(Path(__file__).parent.parent / "provisioning" / "agent.example.toml")
    assert cfg.mqtt is not None and cfg.mqtt.host == "mqtt.city.example"
    assert cfg.device.id == "van-0042"


def test_run_until_drained_without_a_broker_ends_and_says_what_is_left(
        tmp_path: Path) -> None:
    """Nothing to deliver to: with an empty outbox the run ends at once (0); with findings
    in it, it says they stay pending and exits 1. It never waits for ever."""
    db = tmp_path / "outbox.db"
    cfg = write_config(tmp_path / "a.toml", None, db)
    r = subprocess.run(agent_cmd("run", "--config", str(cfg), "--until-drained"),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    with Store(db) as s:
        s.add_many([make_event(i) for i in range(2)])
    r = subprocess.run(agent_cmd("run", "--config", str(cfg), "--until-drained"),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1, r.stderr
    assert "2 findings are still pending: there is no [mqtt] section" in r.stderr


def test_secret_files_come_from_systemds_credentials_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The unit hands secrets over with LoadCredential=; the config names the directory
    systemd puts them in, and says clearly when it is run where that is not set."""
    text = ('[mqtt]\nhost = "b"\nusername = "u"\n'
            'password_file = "${CREDENTIALS_DIRECTORY}/mqtt-password"\n')
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    probs = problems_of(tmp_path, text)
    assert probs == ["mqtt.password_file = '${CREDENTIALS_DIRECTORY}/mqtt-password': "
                     "CREDENTIALS_DIRECTORY is not set (systemd sets it for the service from "
                     "LoadCredential=; run this as the service does, or give the file's path)"]
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt-password").write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    p = tmp_path / "a.toml"
    p.write_text(text)
    cfg = load_config(p)
    assert cfg.mqtt is not None and cfg.mqtt.password is not None
    assert cfg.mqtt.password.get_secret_value() == "s3cret"
