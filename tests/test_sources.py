"""Frame sources: files and folders end cleanly, live cameras come back after failing."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import pytest

from agent.sources import OpenCVSource, Picamera2Source, SourceError, open_source
from tests.conftest import free_port, wait_until

START = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)


def _img(i: int, w: int = 160, h: int = 90) -> np.ndarray:
    img = np.full((h, w, 3), (i * 20) % 255, np.uint8)
    cv2.putText(img, str(i), (10, 60), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (255, 255, 255), 2)
    return img


def test_video_file_frames_follow_the_files_rate_and_end(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (160, 90))
    for i in range(12):
        vw.write(_img(i))
    vw.release()
    src = OpenCVSource(str(path), fps=30.0, start_utc=START)  # the file's 5 fps wins
    frames = []
    while (f := src.read()) is not None:
        frames.append(f)
    src.close()
    assert len(frames) == 12 and not src.live
    assert [f.index for f in frames] == list(range(12))
    assert frames[5].captured_utc == START + timedelta(seconds=1.0)
    assert frames[10].captured_mono - frames[0].captured_mono == pytest.approx(2.0)
    assert frames[0].image.shape == (90, 160, 3)


def test_folder_skips_broken_images_and_counts_them(tmp_path: Path) -> None:
    for i in range(4):
        cv2.imwrite(str(tmp_path / f"f{i:03d}.jpg"), _img(i))
    (tmp_path / "f002.jpg").write_bytes(b"\xff\xd8 truncated")  # a broken frame
    (tmp_path / "notes.txt").write_text("not an image")
    src = OpenCVSource(str(tmp_path), fps=2.0, start_utc=START)
    frames = []
    while (f := src.read()) is not None:
        frames.append(f)
    assert [f.index for f in frames] == [0, 1, 3]
    assert frames[2].captured_utc == START + timedelta(seconds=1.5)
    assert src.stats.broken == 1 and "f002.jpg" in src.stats.last_error


def test_missing_source_and_bad_file_are_clear(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        OpenCVSource(str(tmp_path / "nope.mp4"))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 100)
    with pytest.raises(SourceError, match="not a readable video"):
        OpenCVSource(str(bad))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="no images"):
        OpenCVSource(str(empty))


class _MjpegCamera:
    """An IP camera on a loopback port: serves an MJPEG stream, can be unplugged."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server: http.server.ThreadingHTTPServer | None = None
        self.frames_per_connection = 10_000

    def start(self) -> None:
        cam = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    for i in range(cam.frames_per_connection):
                        _, buf = cv2.imencode(".jpg", _img(i))
                        data = buf.tobytes()
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                         + f"Content-Length: {len(data)}\r\n\r\n".encode()
                                         + data + b"\r\n")
                        time.sleep(0.02)
                except OSError:
                    pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture
def ip_camera() -> Iterator[_MjpegCamera]:
    cam = _MjpegCamera()
    yield cam
    cam.stop()


def test_live_camera_that_disappears_is_reopened(ip_camera: _MjpegCamera) -> None:
    ip_camera.frames_per_connection = 15  # the camera drops every connection after 15 frames
    ip_camera.start()
    stop = threading.Event()
    src = OpenCVSource(f"http://127.0.0.1:{ip_camera.port}/video.mjpg", stop=stop,
                       reopen_min_s=0.1, reopen_max_s=0.3)
    frames = [src.read() for _ in range(40)]
    assert all(f is not None for f in frames) and src.live
    assert src.stats.reopens >= 1, "the dropped stream was not reopened"
    assert frames[-1] is not None and frames[-1].captured_mono > frames[0].captured_mono
    src.close()


def test_live_camera_absent_at_start_keeps_trying_until_it_appears(
        ip_camera: _MjpegCamera) -> None:
    stop = threading.Event()
    src = OpenCVSource(f"http://127.0.0.1:{ip_camera.port}/video.mjpg", stop=stop,
                       reopen_min_s=0.1, reopen_max_s=0.3)
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.append(src.read()), daemon=True)
    t.start()
    time.sleep(0.8)
    assert not got, "read() returned without a camera"
    ip_camera.start()
    wait_until(lambda: bool(got), 20, "a frame once the camera is plugged in")
    assert got[0] is not None and got[0].image.shape == (90, 160, 3)
    src.close()


# --- picamera2 (only on a Pi; here a fake with picamera2's interface) -----------

class FakeRequest:
    def __init__(self, img: Any, meta: dict[str, Any]) -> None:
        self.img, self.meta, self.released = img, meta, False

    def make_array(self, name: str) -> Any:
        assert name == "main"
        return self.img

    def get_metadata(self) -> dict[str, Any]:
        return self.meta

    def release(self) -> None:
        self.released = True


class FakePicamera2:
    """picamera2.Picamera2's calls that the adapter uses, with scriptable failures."""

    instances: ClassVar[list[FakePicamera2]] = []
    script: ClassVar[list[str]] = []  # per capture: "ok", "broken", "die"

    def __init__(self) -> None:
        FakePicamera2.instances.append(self)
        self.started = self.closed = False
        self.config: dict[str, Any] = {}

    def create_video_configuration(self, main: dict[str, Any], controls: dict[str, Any],
                                   buffer_count: int) -> dict[str, Any]:
        return {"main": main, "controls": controls}

    def configure(self, cfg: dict[str, Any]) -> None:
        self.config = cfg

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.closed = True

    def capture_request(self) -> FakeRequest:
        step = FakePicamera2.script.pop(0) if FakePicamera2.script else "ok"
        if step == "die":
            raise RuntimeError("Camera frontend has timed out!")
        w, h = self.config["main"]["size"]
        img = np.zeros((h, w, 3), np.uint8) if step == "ok" else np.zeros((0,), np.uint8)
        ts = int(time.clock_gettime(time.CLOCK_BOOTTIME) * 1e9) - 20_000_000  # 20 ms ago
        return FakeRequest(img, {"SensorTimestamp": ts})


def test_picamera2_frames_times_and_recovery() -> None:
    FakePicamera2.instances = []
    FakePicamera2.script = ["ok", "broken", "die", "ok"]
    src = Picamera2Source(width=320, height=240, fps=10, factory=FakePicamera2,
                          reopen_min_s=0.01, reopen_max_s=0.05)
    cam = FakePicamera2.instances[0]
    assert cam.started and cam.config["main"] == {"size": (320, 240), "format": "RGB888"}
    f1 = src.read()
    assert f1 is not None and f1.image.shape == (240, 320, 3)
    assert time.monotonic() - f1.captured_mono == pytest.approx(0.02, abs=0.015)
    f2 = src.read()  # skips the broken frame, survives the dead camera by reopening it
    assert f2 is not None and f2.index == 1
    assert src.stats.broken == 1 and src.stats.reopens == 1
    assert cam.closed and len(FakePicamera2.instances) == 2
    src.close()
    assert FakePicamera2.instances[1].closed


def test_picamera2_off_a_pi_says_so() -> None:
    with pytest.raises(SourceError, match="only on a Raspberry Pi"):
        open_source("picamera2", "", width=640, height=480, fps=10)
