"""Retraining from a labelled data set, end to end, as a city would run it: a COCO set of
generated recordings (``models/train/export_coco.py``) with its own class names, the class
mapping file, ``models/train/train_dataset.py`` as a process, and the model it writes run by
``patrol-agent detect`` as a process."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent.detector import Detector
from tests.conftest import agent_cmd

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "models" / "train"
CLASSES = ["garbage", "banner", "construction", "bin", "sign"]
SHIPPED = ROOT / "models" / "civil-complaint.tflite"


def _run(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("coco")
    r = _run(str(TRAIN / "export_coco.py"), str(out), "--recordings", "24", "--frames", "6",
             "--seed", "5", "--clutter")
    assert r.returncode == 0, r.stderr
    return out / "annotations.json"


@pytest.fixture(scope="module")
def trained(coco: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped model fine-tuned on the set, briefly and gently (a test's budget)."""
    out = tmp_path_factory.mktemp("model")
    r = _run(str(TRAIN / "train_dataset.py"), str(coco), "--classes",
             str(TRAIN / "classes.example.toml"), "--out", str(out), "--steps", "100",
             "--batch", "16", "--lr", "1e-4", "--seed", "3", "--val", "0.15",
             "--held-out", "0.25", "--init-weights", str(SHIPPED))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    print(r.stdout[-1500:])
    return out


@pytest.mark.slow
def test_a_coco_set_becomes_a_model_the_agent_runs(trained: Path, coco: Path) -> None:
    model = trained / "civil-complaint.tflite"
    det = Detector(model)
    assert list(det.labels) == CLASSES  # labels embedded, in the model's order
    assert det.interp.get_input_details()[0]["dtype"].__name__ == "uint8"
    assert (trained / "civil-complaint.labels.txt").read_text().split() == CLASSES
    # the next fine-tuning can start from this run's float weights
    assert (trained / "civil-complaint.weights.h5").stat().st_size > 100_000

    split = json.loads((trained / "split.json").read_text())
    rec = {part: {Path(p).parent.name for p in paths} for part, paths in split.items()}
    # by recording: no recording's frames on two sides, and every part has some
    assert all(rec[part] for part in ("train", "val", "held_out"))
    assert not rec["train"] & rec["held_out"] and not rec["train"] & rec["val"]
    assert not rec["val"] & rec["held_out"]
    assert sum(len(v) for v in split.values()) == len(json.loads(coco.read_text())["images"])

    # the agent runs it: one JSON line per frame with each detection's label, score and box
    photo = sorted(split["held_out"])[0]
    r = subprocess.run(agent_cmd("detect", photo, "--model", str(model), "--json"),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
    assert len(lines) == 1 and isinstance(lines[0]["detections"], list), lines

    # it was fine-tuned from the shipped model, not from nothing: on the held-out images it
    # keeps most of what the shipped model finds there (an untrained network scores 0)
    ev = json.loads((trained / "evaluation.json").read_text())
    before, after = ev["held_out_before"], ev["held_out"]
    assert before["map50_reported"] >= 0.2, before
    assert after["map50_reported"] >= 0.6 * before["map50_reported"], (before, after)
    assert set(after["by_size"]) == {"small", "medium", "large"}
    # every figure in the card is the run's own
    card = (trained / "MODEL_CARD.md").read_text()
    assert f"**{after['map50_reported']:.3f}**" in card
    m = re.search(r"\*\*([0-9.]+) per image\*\*", card)
    assert m and float(m.group(1)) == round(after["false_alarms_per_image"], 2)
    assert f"mAP {before['map50_reported']:.3f}" in card
    assert "No recording is in two parts" in card and "Fine-tuned from" in card


def test_a_label_the_mapping_does_not_mention_stops_the_run(tmp_path: Path) -> None:
    out = tmp_path / "set"
    r = _run(str(TRAIN / "export_coco.py"), str(out), "--recordings", "3", "--frames", "2",
             "--clutter")
    assert r.returncode == 0, r.stderr
    partial = tmp_path / "classes.toml"
    partial.write_text('[classes]\n"illegal_dumping" = "garbage"\n"placard" = "banner"\n')
    r = _run(str(TRAIN / "train_dataset.py"), str(out / "annotations.json"), "--classes",
             str(partial), "--out", str(tmp_path / "model"), timeout=300)
    assert r.returncode == 2
    assert "construction_site" in r.stderr and "tree" in r.stderr, r.stderr
    assert not (tmp_path / "model" / "civil-complaint.tflite").exists()


def test_a_model_of_another_network_is_refused_as_a_starting_point(tmp_path: Path) -> None:
    out = tmp_path / "set"
    r = _run(str(TRAIN / "export_coco.py"), str(out), "--recordings", "3", "--frames", "2")
    assert r.returncode == 0, r.stderr
    yolo = ROOT / "tests" / "models" / "yolov8_int8.tflite"
    r = _run(str(TRAIN / "train_dataset.py"), str(out / "annotations.json"), "--classes",
             str(TRAIN / "classes.example.toml"), "--out", str(tmp_path / "model"),
             "--init-weights", str(yolo), "--steps", "1", timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "yolov8_int8.tflite" in r.stderr and "not this architecture" in r.stderr
    assert not (tmp_path / "model" / "civil-complaint.tflite").exists()
