"""The pipeline's stages survive a bad item, and stop the agent when one keeps failing."""

from __future__ import annotations

import logging
import math
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from agent.config import Config, parse_config
from agent.nmea import read_nmea
from agent.pipeline import Ending, Feeds, Pipeline
from agent.sources import FrameSource, OpenCVSource
from agent.stages import Faults, FrameSlot, StageFailed
from agent.store import Store
from tests.world import video_frames

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "drive"
T0 = datetime(2025, 5, 14, 1, 30, tzinfo=UTC)


class FlakyDetector:
    """A real detector whose inference fails on some frames, as a TFLite runtime error
    does ("failed to invoke"): the kind of error no stage expects."""

    def __init__(self, real: Any, fails: set[int] | None = None) -> None:
        self.real = real
        self.fails = fails  # frame numbers (from 0) that fail; None: every one
        self.calls = 0

    def detect(self, image: np.ndarray) -> list:
        n, self.calls = self.calls, self.calls + 1
        if self.fails is None or n in self.fails:
            raise RuntimeError("tensorflow/lite/kernels/conv.cc:351 failed to invoke")
        return self.real.detect(image)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.fixture(scope="module")
def drive_start(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 6 s of the sample drive (a construction site, then a banner) as images."""
    out = tmp_path_factory.mktemp("frames")
    for k, img in enumerate(video_frames(SAMPLE / "video.mp4")[:60]):
        cv2.imwrite(str(out / f"{k:05d}.png"), img)
    return out


def _pipeline(tmp_path: Path, frames: Path) -> Pipeline:
    cfg = parse_config({"device": {"id": "unit"}, "store": {"path": str(tmp_path / "o.db")}})

    def camera(stop: threading.Event) -> FrameSource:
        return OpenCVSource(str(frames), fps=10.0, start_utc=T0, stop=stop)

    feeds = Feeds(camera=camera, fixes=read_nmea(SAMPLE / "track.nmea"),
                  fix_history_s=math.inf, every_frame=True)
    return Pipeline(cfg, feeds)


def _findings(tmp_path: Path) -> list[str]:
    with Store(tmp_path / "o.db") as s:
        return [e.event.label for e in s.iter_events()]


def test_a_frame_that_fails_unexpectedly_is_logged_once_counted_and_skipped(
        tmp_path: Path, drive_start: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    pipe = _pipeline(tmp_path, drive_start)
    assert pipe.perception is not None
    pipe.perception.detector = FlakyDetector(pipe.perception.detector, {3, 30, 31, 32})
    report = pipe.run(until_drained=True)
    assert report.ending is Ending.DONE and report.failed == []
    assert pipe.frame_faults.stats.errors == 4
    assert pipe.perception.stats.frames == 56  # the 60 frames but the 4 that failed
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1, [r.getMessage() for r in tracebacks]
    assert "unexpected error on frame 3" in tracebacks[0].getMessage()
    assert _findings(tmp_path) == ["construction", "banner"]  # as without the failures


def test_a_stage_that_keeps_failing_stops_the_agent_with_a_clear_message(
        tmp_path: Path, drive_start: Path, caplog: pytest.LogCaptureFixture) -> None:
    pipe = _pipeline(tmp_path, drive_start)
    assert pipe.perception is not None
    pipe.perception.detector = FlakyDetector(pipe.perception.detector)
    report = pipe.run(until_drained=True)
    assert report.ending is Ending.FAILED
    assert report.failed == ["perception: perception failed on 50 frames in a row (last: "
                             "RuntimeError: tensorflow/lite/kernels/conv.cc:351 failed to "
                             "invoke)"]
    assert "stage perception failed; stopping the agent" in caplog.text
    assert sum(1 for r in caplog.records if r.exc_info) == 1


def test_faults_tell_a_bad_item_from_a_broken_stage() -> None:
    faults = Faults("uplink", item="event", limit=3)
    with faults.guard("event a"):
        raise ValueError("bad")
    with faults.guard("event b"):
        pass  # a good one in between: the run of failures starts again
    for what in ("event c", "event d"):
        with faults.guard(what):
            raise ValueError("bad")
    assert faults.stats.errors == 3 and faults.stats.in_a_row == 2
    with pytest.raises(StageFailed, match="uplink failed on 3 events in a row"), \
            faults.guard("event e"):
        raise ValueError("bad")


def test_a_camera_slot_keeps_the_freshest_frame_and_a_recording_slot_every_frame() -> None:
    from agent.records import Frame

    img = np.zeros((8, 8, 3), np.uint8)
    frames = [Frame(img, T0, float(i), i) for i in range(3)]
    camera = FrameSlot()
    for f in frames:
        camera.put(f)
    assert camera.take(0.1) is frames[2] and camera.dropped == 2
    recording = FrameSlot(every_frame=True)
    got: list[int] = []

    def take_all() -> None:
        while not recording.finished:
            if (f := recording.take(0.1)) is not None:
                got.append(f.index)

    t = threading.Thread(target=take_all)
    t.start()
    for f in frames:
        recording.put(f)  # waits until the last one was taken
    recording.close()
    t.join(5)
    assert got == [0, 1, 2] and recording.dropped == 0


def test_config_defaults_give_a_sane_stop_budget() -> None:
    from agent.pipeline import STOP_BUDGET_S

    assert Config().mqtt is None
    assert STOP_BUDGET_S < 30  # the service unit's TimeoutStopSec must fit it
