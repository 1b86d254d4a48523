"""The capture size: drives rendered at another size are the same drive in more pixels, and
the README's resolution table (benchmarks/bench_resolution.py) is the code's and marks the
agent's own default. The figures themselves are not judged here (a benchmark prints them)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from agent.config import CameraConfig
from agent.simulate.drive import add_parser, simulate_drive
from benchmarks import bench_resolution as br
from tests.world import video_frames

ROOT = Path(__file__).resolve().parents[1]


def _section() -> str:
    doc = (ROOT / "README.md").read_text(encoding="utf-8")
    text = br.sections.current(doc, br.NAME)
    assert text is not None, "README.md has no resolution section: run " + br.COMMAND
    perf = doc.index("## Performance")
    nxt = doc.find("\n## ", perf + 1)
    assert perf < doc.index(text) < (nxt if nxt >= 0 else len(doc)), \
        "the resolution table belongs in README's Performance section"
    return text


def test_readme_resolution_table_names_the_sizes_and_marks_the_default() -> None:
    text = _section()
    assert f"`{br.COMMAND}`" in text
    rows = [line for line in text.splitlines() if re.match(r"\| \d+x\d+", line)]
    sizes = {line.split("|")[1].split()[0] for line in rows}
    assert {"640x360", "960x540", "1280x720"} <= sizes
    marked = {line.split("|")[1].split()[0] for line in rows if "(default)" in line}
    default = CameraConfig()
    assert marked == {f"{default.width}x{default.height}"}, \
        "the size the table marks as the default is not camera.width x camera.height"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"Why the default stays {default.width}x{default.height}" in readme, \
        "README's reasoning under the table names another default than CameraConfig's"


def test_render_takes_every_figure_from_the_measurements() -> None:
    sizes = [(640, 360), (1280, 720)]
    def run(k: float, load: float) -> dict[str, float | None]:
        return {"frame_ms": 2.0 * k * load, "peak_rss_mb": 100.0 * k, "decode": 0.5 * k * load,
                "preprocess": 0.25 * k * load, "picture": 80.0 * k * load,
                "capture_to_commit": 20.0 * k * load}

    # two rounds, the second on a busier machine: the ratios are the rounds' own
    cost = {s: [run(k, 1.0), run(k, 1.5)] for k, s in enumerate(sizes, start=1)}
    found = {s: {"scores": {"matched": 9, "objects": 10, "recall": 0.9, "precision": 1.0,
                            "events": 9, "false_positives": 0},
                 "jpeg_bytes_mean": 40960.0 * k, "pictures": 9}
             for k, s in enumerate(sizes, start=1)}
    text = br.render(cost, found, [21, 22], 60.0, 2, 21)
    row = next(line for line in text.splitlines() if line.startswith("| 1280x720"))
    assert "(default)" in row  # CameraConfig's default
    assert "5.00 ms (2.00x)" in row and "0.92 MP (4.00x)" in row and "80 KB (2.00x)" in row
    assert "200 ms (2.00x)" in row and "200 MB (2.00x)" in row
    face_px, plate_px = br.privacy_px()
    assert face_px is not None and plate_px is not None  # models/privacy/README.md's tables
    assert br.reach_m((1280, 720), br.FACE_M, face_px) == pytest.approx(
        2 * br.reach_m((640, 360), br.FACE_M, face_px))


def test_simulate_drive_at_another_size_is_the_same_drive(tmp_path: Path) -> None:
    import argparse
    p = argparse.ArgumentParser(prog="patrol-agent")
    add_parser(p.add_subparsers(dest="command"))
    args = p.parse_args(["simulate-drive", "--seed", "21", "--out", str(tmp_path / "big"),
                         "--duration", "8", "--fps", "5", "--size", "960x540"])
    assert args.func(args) == 0
    simulate_drive(21, tmp_path / "small", duration_s=8, fps=5)
    frames = video_frames(tmp_path / "big" / "video.mp4")
    assert len(frames) == 40 and frames[0].shape == (540, 960, 3)
    small, big = (json.loads((tmp_path / d / "truth.json").read_text())
                  for d in ("small", "big"))

    def placed(truth: dict) -> list[dict]:
        return [{k: v for k, v in o.items() if k != "seen"} for o in truth["objects"]]

    assert placed(big) == placed(small)
    seen = {o["id"]: o["seen"] for o in small["objects"] if "seen" in o}
    assert seen and {o["id"] for o in big["objects"] if "seen" in o} == set(seen)
    for o in big["objects"]:
        if "seen" in o:  # in the video's own pixels
            assert o["seen"]["max_height_px"] == pytest.approx(
                1.5 * seen[o["id"]]["max_height_px"], rel=0.05)
    rows = [[json.loads(line) for line in (tmp_path / d / "frames.jsonl").read_text()
             .splitlines()] for d in ("small", "big")]
    for a, b in zip(*rows, strict=True):  # boxes as fractions of the frame: the same
        boxes_a = {o["id"]: o["box"] for o in a["objects"]}
        for o in b["objects"]:
            if o["id"] in boxes_a:
                assert o["box"] == pytest.approx(boxes_a[o["id"]], abs=0.01)


def test_simulate_drive_rejects_a_bad_size(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="size"):
        simulate_drive(21, tmp_path, duration_s=1, size=(641, 360))
