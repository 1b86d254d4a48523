"""A unit on a metered link, as it runs: ``patrol-agent run`` as a process with the
sample drive as its camera and a real Mosquitto. With a small daily budget the findings
and their crops go first and the full pictures wait; nothing is lost, and the pictures
follow once the office raises the budget. Pictures only on request go when the office
sends send-image; pictures held for a cheap link go when the broker is reached through
one."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.link import periods
from agent.store import Store
from tests.conftest import agent_cmd, wait_until
from tests.test_remote_config import BASE, Rig


class Received:
    """What the office's subscriber got: events, crops and full pictures by event id."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        rig.office.client.subscribe([(f"{BASE}/events", 1), (f"{BASE}/images/#", 1),
                                     (f"{BASE}/telemetry", 0)])

    def _messages(self) -> list[tuple[str, bytes]]:
        with self.rig.office.lock:
            return [(t, p) for t, p, _ in self.rig.office.messages]

    def events(self) -> dict[str, dict]:
        return {e["id"]: e for e in (json.loads(p) for t, p in self._messages()
                                     if t == f"{BASE}/events")}

    def images(self) -> dict[str, bytes]:
        prefix = f"{BASE}/images/"
        return {t[len(prefix):]: p for t, p in self._messages()
                if t.startswith(prefix) and not t.endswith("/crop")}

    def crops(self) -> dict[str, bytes]:
        prefix = f"{BASE}/images/"
        return {t[len(prefix):-len("/crop")]: p for t, p in self._messages()
                if t.startswith(prefix) and t.endswith("/crop")}

    def telemetry(self) -> list[dict]:
        return [json.loads(p) for t, p in self._messages() if t == f"{BASE}/telemetry"]


def _drive_delivered(rig: Rig, n: int = 2) -> dict[str, int]:
    """Once the first ``n`` findings of the drive (6 and 9 s in) are delivered."""
    def done() -> bool:
        with Store(rig.db) as store:
            return store.counts()["pending"] == 0 and store.counts()["delivered"] >= n
    wait_until(done, 120, "the drive's findings delivered")
    with Store(rig.db) as store:
        return {"delivered": store.counts()["delivered"], "held": store.held_image_count()}


@pytest.fixture
def budget_rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path, extra="[link]\nbudget_mb_per_day = 0.06\ntelemetry_below = 0.3\n"
                            "[health]\ntelemetry_interval_s = 1.0\n")
    try:
        yield r
    finally:
        r.close()


def test_a_small_budget_sends_findings_first_and_the_pictures_follow(budget_rig: Rig) -> None:
    rig = budget_rig
    got = Received(rig)
    counts = _drive_delivered(rig)
    wait_until(lambda: len(got.events()) >= counts["delivered"], 15, "every event received")
    events = got.events()
    # Every finding arrived, with its crop; past half the budget the full pictures were
    # held back for them, and each event says whether its picture comes with it.
    held = {i for i, e in events.items() if e["image"].get("held")}
    assert len(events) >= 2 and counts["held"] == len(held) >= 1
    assert set(got.crops()) == {i for i, e in events.items() if e["crop"] is not None}
    assert set(got.images()) == set(events) - held
    with Store(rig.db) as store:
        used = store.link_usage(periods()[0])
    assert 0 < used <= 0.06 * 1024 * 1024
    # What is held, and why, is in the unit's report and in patrol-agent status. MQTT
    # telemetry itself stops past 30 % of the budget here (a picture held means over 50 %).
    def report() -> dict:
        return json.loads((rig.db.parent / "telemetry.json").read_text())

    wait_until(lambda: report().get("link", {}).get("images_held") == len(held), 15,
               "the report saying what is held")
    status = subprocess.run(agent_cmd("status", "--config", str(rig.cfg)),
                            capture_output=True, text=True, timeout=30).stdout
    assert f"HELD      {len(held)} pictures held: over 50% of the budget is used" in status
    assert "of 0.06 MB today" in status
    wait_until(lambda: report()["link"]["telemetry_skipped"] > 0, 10, "telemetry held back")

    # The office raises the budget: the pictures follow, each the one its event named.
    rig.office.desire({"version": 1, "config": {"link": {"budget_mb_per_day": 50}}})
    wait_until(lambda: set(got.images()) >= set(events), 60, "the held pictures")
    for event_id, jpeg in got.images().items():
        assert hashlib.sha256(jpeg).hexdigest() == events[event_id]["image"]["sha256"]
    wait_until(lambda: _drive_delivered(rig)["held"] == 0, 15, "nothing held")
    wait_until(lambda: any(t.get("link", {}).get("budget_mb_per_day") == 50
                           and t["link"]["images_held"] == 0 for t in got.telemetry()), 15,
               "telemetry again, with nothing held")


def test_pictures_on_request_go_when_the_office_asks(tmp_path: Path) -> None:
    rig = Rig(tmp_path, extra='[link]\nimages = "on_request"\n')
    try:
        got = Received(rig)
        counts = _drive_delivered(rig)
        assert counts["held"] == counts["delivered"]
        wait_until(lambda: len(got.events()) >= counts["delivered"], 15, "the events")
        first = sorted(got.events())[0]
        answer = rig.office.ask("send-image", {"event_id": first})
        assert answer["ok"] is True and answer["result"]["queued"] is True
        wait_until(lambda: first in got.images(), 15, "the picture asked for")
        assert hashlib.sha256(got.images()[first]).hexdigest() == answer["result"]["sha256"]
        assert set(got.images()) == {first}  # only that one
        assert rig.office.ask("send-image", {"event_id": "nope"})["ok"] is False
    finally:
        rig.close()


def test_pictures_held_for_a_cheap_link_go_when_the_broker_is_reached_through_one(
        tmp_path: Path) -> None:
    rig = Rig(tmp_path, extra='[link]\nimages = "cheap_link"\ncheap_interfaces = ["wlan9"]\n')
    try:
        got = Received(rig)
        counts = _drive_delivered(rig)
        assert counts["held"] == counts["delivered"] and not got.images()
        # The test's broker is on loopback: call that the depot's Wi-Fi.
        rig.office.desire({"version": 1, "config": {"link": {"cheap_interfaces": ["lo"]}}})
        wait_until(lambda: len(got.images()) == counts["delivered"], 60, "the held pictures")
        rig.unit.wait_for("through lo: a cheap link", 5)
    finally:
        rig.close()


def test_the_meter_keeps_the_order_and_the_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rules docs/mqtt.md states, on the meter itself: findings to the last byte of a
    budget, pictures below half of it, telemetry below 80 %; the rate as a token bucket
    that a message may overdraw; nothing counted or limited over a cheap link."""
    from agent.config import LinkConfig
    from agent.link import MB, Meter

    m = Meter(LinkConfig(budget_mb_per_day=1.0, rate_kbps=80))  # 10,000 bytes/s
    half, most = int(0.5 * MB), int(0.8 * MB) + 1
    assert m.allows("image", 1000, half - 1001, 0) and not m.allows("image", 1000, half, 0)
    assert m.allows("telemetry", 500, most - 501, 0)
    assert not m.allows("telemetry", 500, most, 0)
    assert m.allows("finding", 1000, MB - 1000, 0) and not m.allows("finding", 1000, MB - 999, 0)
    now = [100.0]
    monkeypatch.setattr("agent.link.time.monotonic", lambda: now[0])
    m._refilled = now[0]
    assert m.rate_ok()
    m.spent(30_000)  # a picture: it goes, and overdraws the bucket by 3 s
    assert not m.rate_ok()
    now[0] += 2.9
    assert not m.rate_ok()
    now[0] += 0.2
    assert m.rate_ok()
    m.cheap = True
    assert m.allows("image", 10 * MB, MB, MB) and not m.counts()
    m.spent(10 * MB)
    assert m.rate_ok()
