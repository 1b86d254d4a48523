"""``patrol-office serve`` as a process against a real Mosquitto and both real store engines:
what it keeps, what it refuses, what it never loses, and what it answers over HTTP."""

from __future__ import annotations

import hashlib
import http.cookiejar
import json
import signal
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import Mosquitto, wait_until
from tests.office_rig import FakeFleet, OfficeServer, at, event_payload, office_cmd, wait_counts

GOYANG = (37.6584, 126.8320)


@pytest.fixture
def mosquitto(tmp_path: Path):
    m = Mosquitto(tmp_path).start()
    yield m
    m.stop()


def test_serve_keeps_findings_and_pictures_and_counts_bad_messages(
        tmp_path: Path, mosquitto: Mosquitto, store_url: str) -> None:
    office = OfficeServer(tmp_path, mosquitto.port, store_url,
                          config="[limits]\nmax_json_kb = 4\n")
    fleet = FakeFleet(mosquitto.port)
    try:
        a = fleet.finding("van-1", "garbage", *GOYANG, at(0, 1), seed=1)
        b = fleet.finding("van-2", "garbage", GOYANG[0] + 0.00004, GOYANG[1], at(1, 2), seed=2,
                          image_first=False)  # 4.4 m north, the next day, event first
        c = fleet.finding("van-1", "banner", GOYANG[0] + 0.001, GOYANG[1], at(0, 3), seed=3)
        fleet.send_event(a)  # a duplicate delivery
        fleet.send_pictures(b)
        # Hostile and broken messages, each of a kind the contract rules out.
        good = event_payload(c)
        fleet.publish("patrol/van-1/events", b"{not json")
        fleet.publish("patrol/van-1/events", json.dumps({**good, "score": "high",
                                                         "id": "0" * 36}))
        fleet.publish("patrol/van-1/events", json.dumps({**good, "schema": 2}))
        fleet.publish("patrol/van-1/events", b"[" + b" " * 5000 + b"]")
        fleet.publish("patrol/van-3/events", json.dumps(event_payload(a)))  # not van-3's
        fleet.publish(f"patrol/van-1/images/{c.id}", b"\xff\xd8 not the picture")
        fleet.publish("patrol/van-1/nonsense", b"x")
        want = {"not_json": 1, "wrong_schema": 1, "future_schema": 1, "oversized": 1,
                "device_mismatch": 1, "hash_mismatch": 1}
        wait_until(lambda: all(office.get("/api/stats")["bad_messages"].get(k) == v
                               for k, v in want.items()), 30, f"bad messages counted: {want}")
        counts = wait_counts(office, sightings=3, pictures=6, complaints=2, units=2)
        assert counts["sightings"] == 3
        stats = office.get("/api/stats")
        assert stats["collector"]["duplicates"] >= 2
        assert office.proc.poll() is None, "bad input must never stop the collector"

        geo = office.get("/api/complaints.geojson")
        by_class = {f["properties"]["class"]: f for f in geo["features"]}
        g = by_class["garbage"]["properties"]
        assert g["sightings"] == 2 and g["vehicles"] == ["van-1", "van-2"]
        assert g["first_seen"] == a.captured_at and g["last_seen"] == b.captured_at
        best = g["image_url"]
        assert office.get(best) in (a.image, b.image)
        assert office.get(g["crop_url"]) in (a.crop, b.crop)
        assert hashlib.sha256(office.get(f"/images/{c.id}.jpg")).hexdigest() == hashlib.sha256(
            c.image).hexdigest(), "the good picture stays, the wrong one is refused"
        assert "bad message on patrol/van-1/events: not_json" in office.log()
    finally:
        fleet.close()
        assert office.stop() == 0


def test_a_collector_killed_mid_stream_loses_nothing(tmp_path: Path, mosquitto: Mosquitto,
                                                     store_url: str) -> None:
    office = OfficeServer(tmp_path, mosquitto.port, store_url)
    fleet = FakeFleet(mosquitto.port)
    total = 120
    sent: list[str] = []

    def drive() -> None:
        for i in range(total):
            # One object every 30 m along a street: 120 complaints.
            s = fleet.finding("van-1", "banner", GOYANG[0] + i * 0.00027, GOYANG[1],
                              at(0, i), seed=100 + i)
            sent.append(s.id)
    t = threading.Thread(target=drive)
    t.start()
    try:
        wait_until(lambda: office.get("/api/stats")["store"]["sightings"] >= 20, 30,
                   "the first findings stored")
        office.stop(signal.SIGKILL)  # power cut, OOM killer: no goodbye
        t.join(60)
        assert len(sent) == total, "the broker kept taking the fleet's findings"
        office.start()
        counts = wait_counts(office, timeout=60, sightings=total, pictures=2 * total,
                             complaints=total)
        assert counts["complaints"] == total
        ids = {f["id"] for f in office.get("/api/complaints.geojson")["features"]}
        assert ids == set(sent)
        assert "session resumed" in office.log()
    finally:
        fleet.close()
        office.stop()


def test_http_answers_bad_input_with_4xx_and_changes_status_after_login(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    hashed = subprocess.run(office_cmd("hash-password"), input="correct horse 7\n",
                            capture_output=True, text=True, check=True).stdout.strip()
    assert hashed.startswith("scrypt:") and "correct" not in hashed
    office = OfficeServer(tmp_path, mosquitto.port, f"sqlite:///{tmp_path}/o.sqlite",
                          config=f'[[users]]\nname = "kim"\npassword_hash = "{hashed}"\n'
                                 "[limits]\nmax_body_kb = 1\n")
    fleet = FakeFleet(mosquitto.port)
    try:
        s = fleet.finding("van-1", "construction", *GOYANG, at(0, 1), seed=9)
        wait_counts(office, sightings=1, pictures=2)
        bad_gets = ["/api/complaints.geojson?bbox=1,2,3", "/api/complaints.geojson?bbox=a,b,c,d",
                    "/api/complaints.geojson?bbox=10,10,5,5", "/api/complaints.csv?status=done",
                    "/api/complaints.geojson?from=yesterday", "/api/heat?class=%3Cscript%3E",
                    "/api/complaints.geojson?vehicle=a/b", "/api/complaints.geojson?limit=0",
                    "/api/complaints/../../etc/passwd", "/api/complaints/123",
                    f"/api/complaints/{s.id[:-1]}0", "/images/nope.jpg",
                    "/images/0190a000-0000-7000-8000-000000000000.jpg", "/no/such/page",
                    "/open311/v2/requests.xml", "/open311/v2/requests.json?status=maybe",
                    "/open311/v2/requests.json?start_date=never",
                    "/open311/v2/requests/xyz.json", "/open311/v2/services.json?"
                    "jurisdiction_id=seoul.go.kr", "/static/../office/config.py"]
        for path in bad_gets:
            code, body = office.status(path)
            assert 400 <= code < 500, f"{path}: {code} {body[:200]!r}"
            assert body, f"{path}: an empty error"
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))

        def post(path: str, body: object, ctype: str = "application/json") -> tuple[int, dict]:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            req = urllib.request.Request(office.base + path, data=data, method="POST",
                                         headers={"Content-Type": ctype})
            try:
                with opener.open(req, timeout=10) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read() or b"{}")
        status_path = f"/api/complaints/{s.id}/status"
        assert post(status_path, {"status": "confirmed"})[0] == 401
        assert post("/api/login", {"user": "kim", "password": "wrong"})[0] == 401
        assert post("/api/login", {"user": "lee", "password": "correct horse 7"})[0] == 401
        assert post("/api/login", {"user": "kim"})[0] == 400
        assert post("/api/login", b"user=kim&password=x", "application/x-www-form-urlencoded"
                    )[0] == 415
        assert post("/api/login", {"user": "kim", "password": "x" * 5000})[0] == 413
        assert post("/api/login", b"[1,2", "application/json")[0] == 400
        code, who = post("/api/login", {"user": "kim", "password": "correct horse 7"})
        assert (code, who) == (200, {"user": "kim"})
        assert post(status_path, {"status": "done"})[0] == 400
        assert post(status_path, {"status": 5})[0] == 400
        assert post(status_path, {"status": "duplicate"})[0] == 400
        assert post(status_path, {"status": "confirmed", "note": ["x"]})[0] == 400
        assert post("/api/complaints/0190a000-0000-7000-8000-000000000000/status",
                    {"status": "confirmed"})[0] == 404
        code, c = post(status_path, {"status": "dispatched", "note": "crew 3"})
        assert code == 200 and c["status"] == "dispatched"
        assert c["history"][-1] == {**c["history"][-1], "status": "dispatched", "by": "kim",
                                    "note": "crew 3"}
        assert post(f"/api/complaints/{s.id}/split", {"sightings": [s.id]})[0] == 400
        assert post(f"/api/complaints/{s.id}/merge", {"into": s.id})[0] == 400
        assert post("/api/logout", {})[0] == 200
        assert post(status_path, {"status": "resolved"})[0] == 401

        csv_text = office.get("/api/complaints.csv?class=construction").decode()
        header, row = csv_text.splitlines()[:2]
        assert header.startswith("id,class,status,lat,lon")
        assert row.startswith(f"{s.id},construction,dispatched,")
        services = office.get("/open311/v2/services.json")
        assert [x["service_code"] for x in services] == ["garbage", "banner", "construction"]
        reqs = office.get("/open311/v2/requests.json?start_date=2026-01-01T00:00:00Z")
        assert len(reqs) == 1
        r = reqs[0]
        assert r["service_request_id"] == s.id and r["status"] == "open"
        assert r["service_code"] == "construction" and r["lat"] == pytest.approx(GOYANG[0])
        assert r["long"] == pytest.approx(GOYANG[1])
        assert r["media_url"].endswith(f"/images/{s.id}.jpg")
        assert r["status_notes"] == "dispatched: crew 3"
        assert office.get(f"/open311/v2/requests/{s.id}.json") == reqs
        assert office.get("/open311/v2/requests.json?status=closed&start_date=2026-01-01") == []
        assert office.get("/open311/v2/requests.json") == reqs, "by default the last 90 days"
        assert office.get("/open311/v2/requests.json?end_date=2026-10-01T00:00:00Z") == []
        assert office.proc.poll() is None
        assert "Traceback" not in office.log()
    finally:
        fleet.close()
        office.stop()


def test_the_fleet_panel_shows_units_from_their_retained_reports(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    fleet = FakeFleet(mosquitto.port)
    status = {"state": "online", "device": "van-7", "agent_version": "0.1.0",
              "model": "civil-complaint", "config_version": 3, "config_hash": "ab12"}
    tele = {"schema": 1, "device": "van-7", "at": "2026-11-30T11:31:32.021Z",
            "config_version": 3, "outbox": {"pending": 2},
            "gps": {"fix": True, "position": {"lat": GOYANG[0], "lon": GOYANG[1]}}}
    fleet.publish("patrol/van-7/status", json.dumps(status), retain=True)
    fleet.publish("patrol/van-7/telemetry", json.dumps(tele), qos=0, retain=True)
    fleet.publish("patrol/van-8/status", json.dumps({**status, "device": "van-8",
                                                     "state": "offline"}), retain=True)
    office = OfficeServer(tmp_path, mosquitto.port, f"sqlite:///{tmp_path}/o.sqlite")
    try:
        wait_until(lambda: len(office.get("/api/fleet")) == 2, 20, "two units in the panel")
        wait_until(lambda: office.get("/api/fleet")[0]["telemetry"] is not None, 20,
                   "van-7's telemetry")
        van7, van8 = office.get("/api/fleet")
        assert van7["online"] is True and van8["online"] is False
        assert van7["config_version"] == 3 and van7["telemetry"]["outbox"]["pending"] == 2
        assert van7["position"]["lat"] == pytest.approx(GOYANG[0])
    finally:
        fleet.close()
        office.stop()


def test_check_config_names_each_bad_key(tmp_path: Path) -> None:
    good = tmp_path / "office.toml"
    good.write_text('[broker]\nhost = "broker.goyang.example"\npassword = "s3cret"\n'
                    '[store]\nurl = "sqlite:///office.sqlite"\n[map]\nzoom = 15\n')
    r = subprocess.run(office_cmd("check-config", str(good)), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "s3cret" not in r.stdout + r.stderr and "is valid" in r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[broker]\nport = 99999\nhots = "x"\n[store]\nurl = "mysql://x"\n'
                   '[complaints]\nmerge_m = -1\n')
    r = subprocess.run(office_cmd("check-config", str(bad)), capture_output=True, text=True)
    assert r.returncode == 2
    for key in ("broker.port", "broker.hots: unknown key", "store.url", "complaints.merge_m"):
        assert key in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    (tmp_path / "broken.toml").write_text("[broker\n")
    r = subprocess.run(office_cmd("check-config", str(tmp_path / "broken.toml")),
                       capture_output=True, text=True)
    assert r.returncode == 2 and "not valid TOML" in r.stderr
    r = subprocess.run(office_cmd("serve", "--broker", "nowhere"), capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2 and "not HOST:PORT" in r.stderr


def test_a_store_outage_loses_nothing(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """PostgreSQL goes away under a running collector: what came meanwhile is not
    acknowledged, and is stored once the database is back."""
    from tests.office_rig import Postgres
    pg = Postgres().start()
    office = OfficeServer(tmp_path, mosquitto.port, pg.new_database())
    fleet = FakeFleet(mosquitto.port)
    try:
        fleet.finding("van-1", "garbage", *GOYANG, at(0, 1), seed=40)
        wait_counts(office, sightings=1)
        pg.pause()
        for i in range(5):
            fleet.finding("van-1", "banner", GOYANG[0] + 0.001 * (i + 1), GOYANG[1],
                          at(0, 10 + i), seed=41 + i)
        wait_until(lambda: "will take it again" in office.log(), 30, "the store failure logged")
        pg.resume()
        counts = wait_counts(office, timeout=90, sightings=6, pictures=12, complaints=6)
        assert counts["units"] == 1
        assert office.proc.poll() is None
    finally:
        fleet.close()
        office.stop()
        pg.stop()


def _hostile_events(good: dict, n: int, seed: int) -> list[bytes]:
    """Events broken the ways a buggy or hostile unit breaks them: keys gone, wrong types,
    values out of range, wrong nesting, random bytes."""
    import random
    rng = random.Random(seed)
    wild = [None, True, -1, 1e308, float("nan"), "", "x" * 300, [], {}, [1, 2], {"a": 1},
            "2026-13-45T99:99:99Z", "../../etc", "\u0000", -1e9]
    out: list[bytes] = []
    for _ in range(n):
        e = json.loads(json.dumps(good))
        for _ in range(rng.randint(1, 3)):
            key = rng.choice([*e.keys(), "position.lat", "image.sha256", "schema"])
            if "." in key:
                outer, inner = key.split(".")
                if isinstance(e.get(outer), dict):
                    e[outer][inner] = rng.choice(wild)
            elif rng.random() < 0.3:
                e.pop(key, None)
            else:
                e[key] = rng.choice(wild)
        kind = rng.random()
        if kind < 0.1:
            out.append(bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64))))
        elif kind < 0.15:
            out.append(json.dumps([e]).encode())
        else:
            out.append(json.dumps(e, allow_nan=True).encode())
    return out


def test_a_flood_of_hostile_payloads_never_stops_the_collector(
        tmp_path: Path, mosquitto: Mosquitto) -> None:
    office = OfficeServer(tmp_path, mosquitto.port, f"sqlite:///{tmp_path}/o.sqlite")
    fleet = FakeFleet(mosquitto.port)
    try:
        probe = fleet.finding("van-1", "garbage", *GOYANG, at(0, 1), seed=60)
        wait_counts(office, sightings=1)
        good = event_payload(probe)
        hostile = _hostile_events({**good, "id": "0190a000-0000-7000-8000-00000000abcd"},
                                  300, seed=11)
        for payload in hostile:
            fleet.publish("patrol/van-1/events", payload)
        for payload in hostile[:50]:
            fleet.publish("patrol/van-1/status", payload)
            fleet.publish("patrol/van-1/config/reported", payload)
        last = fleet.finding("van-1", "banner", GOYANG[0] + 0.001, GOYANG[1], at(0, 2),
                             seed=61)
        wait_until(lambda: office.status(f"/api/complaints/{last.id}")[0] == 200, 60,
                   "the good event after the flood")
        assert office.get(f"/api/complaints/{last.id}")["class"] == "banner"
        stats = office.get("/api/stats")
        # Whatever of the mutants still was a valid event is one more sighting, no more.
        assert stats["store"]["sightings"] <= 3
        assert sum(stats["bad_messages"].values()) >= 250
        assert office.proc.poll() is None
        assert "Traceback" not in office.log() and "unexpected error" not in office.log()
    finally:
        fleet.close()
        office.stop()


def test_no_request_makes_a_500(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """Random query strings, ids and bodies against every endpoint of a live office."""
    import random
    office = OfficeServer(tmp_path, mosquitto.port, f"sqlite:///{tmp_path}/o.sqlite")
    rng = random.Random(3)
    junk = ["", "'", '"', "%00", "%FF", "-1", "1e999", "nan", "a,b,,c", "../..", "<b>",
            "2026-02-30", "9" * 40, "0190a000-0000-7000-8000-000000000000", ",", "%2C%2C",
            "new,", "1,2,3,4", "-200,-100,300,100", "🚗"]
    keys = ["class", "status", "from", "to", "bbox", "vehicle", "limit", "service_code",
            "service_request_id", "start_date", "end_date", "jurisdiction_id"]
    gets = ["/api/complaints.geojson", "/api/complaints.csv", "/api/heat", "/api/fleet",
            "/api/stats", "/api/config", "/open311/v2/services.json",
            "/open311/v2/requests.json", "/open311/v2/requests/{j}.json",
            "/api/complaints/{j}", "/images/{j}.jpg", "/images/{j}/crop.jpg", "/", "/healthz"]
    posts = ["/api/login", "/api/logout", "/api/complaints/{j}/status",
             "/api/complaints/{j}/merge", "/api/complaints/{j}/split"]
    from urllib.parse import quote
    try:
        for _ in range(300):
            j = quote(rng.choice(junk), safe="")
            query = "&".join(f"{rng.choice(keys)}={quote(rng.choice(junk), safe='%')}"
                             for _ in range(rng.randint(0, 4)))
            path = rng.choice(gets).format(j=j) + (f"?{query}" if query else "")
            code, body = office.status(path)
            assert code < 500, f"GET {path}: {code} {body[:300]!r}"
        bodies = [b"", b"{}", b"[]", b"null", b'{"status": null}', b'{"into": 5}',
                  b'{"sightings": "x"}', b'{"user": [], "password": {}}', b"\xff\xfe",
                  b'{"status": "new", "note": 7}', b"{" * 500]
        for _ in range(150):
            j = quote(rng.choice(junk), safe="")
            path = rng.choice(posts).format(j=j)
            ctype = rng.choice(["application/json", "text/plain", ""])
            code, body = office.status(path, "POST", rng.choice(bodies),
                                       {"Content-Type": ctype} if ctype else {})
            assert code < 500, f"POST {path}: {code} {body[:300]!r}"
        assert "Traceback" not in office.log()
    finally:
        office.stop()
