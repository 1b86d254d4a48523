"""Model updates as they happen on a unit: a desired config names a model on an HTTP
server (served by the test on loopback); ``patrol-agent run`` as a process fetches it,
resuming a dropped download, checks its hash, runs it and swaps it in, reporting each
step on a real Mosquitto. A wrong hash is refused, and a model that does not load is
rolled back, with the unit working on its old model throughout."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.test_remote_config import BASE, ROOT, Rig

MODEL = (ROOT / "models" / "civil-complaint.tflite").read_bytes()
LABELS = (ROOT / "models" / "civil-complaint.labels.txt").read_text().split()


class ModelServer:
    """Files over HTTP with Range requests, as a CDN serves them; ``drop_after``: the
    first full response breaks off after that many bytes (a mobile link dropping)."""

    def __init__(self, files: dict[str, bytes], drop_after: int | None = None) -> None:
        self.files = files
        self.drop_after = drop_after
        self.requests: list[tuple[str, str | None]] = []
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                rng = self.headers.get("Range")
                srv.requests.append((self.path, rng))
                body = srv.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/"
                                     f"{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                part = body[start:]
                if srv.drop_after is not None and not rng:
                    part, srv.drop_after = part[:srv.drop_after], None
                self.wfile.write(part)
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    r.office.client.subscribe(f"{BASE}/model/progress", qos=1)
    try:
        yield r
    finally:
        r.close()


def _steps(rig: Rig) -> list[dict]:
    with rig.office.lock:
        return [json.loads(p) for t, p, _ in rig.office.messages
                if t == f"{BASE}/model/progress"]


def _model_doc(version: int, url: str, sha: str, rid: str) -> dict:
    return {"version": version, "request_id": rid,
            "model": {"url": url, "sha256": sha, "labels": LABELS}}


def test_a_model_is_fetched_resuming_a_dropped_link_checked_and_swapped_in(rig: Rig) -> None:
    server = ModelServer({"/m.tflite": MODEL}, drop_after=len(MODEL) // 3)
    sha = hashlib.sha256(MODEL).hexdigest()
    try:
        rig.office.desire(_model_doc(1, f"{server.url}/m.tflite", sha, "m1"))
        report = rig.office.report(lambda r: r.get("request_id") == "m1", timeout=60)
        assert report["status"] == "accepted", report
        assert report["restarted"] == ["detector"] and "detector.model" in report["changed"]
        # The link dropped a third of the way; the rest came as a Range request.
        assert server.requests[0] == ("/m.tflite", None)
        assert any(r == f"bytes={len(MODEL) // 3}-" for _, r in server.requests[1:])
        steps = [s["step"] for s in _steps(rig)]
        assert steps[:1] == ["downloading"] and "resumed" in steps
        assert steps[-2:] == ["verified", "swapped"]
        installed = rig.db.parent / "models" / f"{sha[:16]}.tflite"
        assert installed.read_bytes() == MODEL
        assert (rig.db.parent / "models" / f"{sha[:16]}.labels.txt").read_text().split() \
            == LABELS
        rig.unit.wait_for("version 1 works (model)", 60)  # it ran on the camera's frames
        wait_until(lambda: any(s.get("model") == sha[:16] for s in rig.office.statuses()),
                   15, "the status naming the new model")
    finally:
        server.close()
    # After a restart the fetched model is in force, with the server long gone.
    rig.unit.stop()
    rig.start()
    rig.unit.wait_for("config from the office in force: device 1", 30)
    assert rig.office.answer_within("ping", 30)["ok"] is True
    online = [s for s in rig.office.statuses() if s["state"] == "online"]
    assert online[-1]["model"] == sha[:16]


def test_a_wrong_hash_is_refused_and_the_old_model_goes_on(rig: Rig) -> None:
    server = ModelServer({"/m.tflite": MODEL})
    try:
        rig.office.desire(_model_doc(1, f"{server.url}/m.tflite", "ab" * 32, "bad-hash"))
        report = rig.office.report(lambda r: r.get("request_id") == "bad-hash", timeout=60)
        assert report["status"] == "rejected" and "sha256" in report["reason"]
        assert report["in_force"] == {}
        assert _steps(rig)[-1]["step"] == "failed"
        models = rig.db.parent / "models"
        assert not list(models.glob("*.tflite")) and not list(models.glob("staging/*"))
        assert rig.unit.seen("restarted detector") is None
        assert rig.office.ask("ping")["ok"] is True
    finally:
        server.close()


def test_a_model_that_does_not_load_is_rolled_back_and_not_fetched_again(rig: Rig) -> None:
    broken = MODEL[: len(MODEL) // 2]  # what a truncated upload looks like
    server = ModelServer({"/m.tflite": broken})
    try:
        rig.office.desire(_model_doc(1, f"{server.url}/m.tflite",
                                     hashlib.sha256(broken).hexdigest(), "broken"))
        report = rig.office.report(lambda r: r.get("request_id") == "broken", timeout=60)
        assert report["status"] == "rolled_back", report
        assert "does not work" in report["reason"] and report["in_force"] == {}
        assert _steps(rig)[-1]["step"] == "rolled_back"
        assert not list((rig.db.parent / "models").glob("*.tflite"))
        fetched = len(server.requests)
        # The broker hands the retained document again at the next connection: it is
        # not fetched or tried again.
        rig.unit.stop()
        rig.start()
        assert rig.office.ask("ping")["ok"] is True
        assert len(server.requests) == fetched
        assert all(s.get("model") == "civil-complaint" for s in rig.office.statuses()
                   if s["state"] == "online")
    finally:
        server.close()
