"""A float model's input normalisation taken from its own metadata (as Model Maker and the
TFLite metadata writer record it), the config still able to set it, and broken metadata
refused by name. The metadata is written here the way the metadata writer lays it out
(ModelMetadata, file identifier M001, in a buffer named TFLITE_METADATA)."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import cv2
import flatbuffers
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

from agent.detector import Detector, DetectorError, Preprocess
from agent.tflite_metadata import MetadataError, Normalization, input_normalization
from tests.conftest import agent_cmd
from tests.test_detector import TEST_MODELS, shapes_scene

FLOAT_MODEL = TEST_MODELS / "yolov8_float32.tflite"
LABELS = TEST_MODELS / "yolov8_float32.labels.txt"


def model_metadata(mean: list[float], std: list[float]) -> bytes:
    """A ModelMetadata flatbuffer: one subgraph, one input tensor, NormalizationOptions."""
    b = flatbuffers.Builder(256)

    def floats(values: list[float]) -> int:
        b.StartVector(4, len(values), 4)
        for v in reversed(values):
            b.PrependFloat32(v)
        return b.EndVector()

    def tables(items: list[int]) -> int:
        b.StartVector(4, len(items), 4)
        for t in reversed(items):
            b.PrependUOffsetTRelative(t)
        return b.EndVector()

    m, s = floats(mean), floats(std)
    b.StartObject(2)  # NormalizationOptions
    b.PrependUOffsetTRelativeSlot(0, m, 0)
    b.PrependUOffsetTRelativeSlot(1, s, 0)
    norm = b.EndObject()
    b.StartObject(2)  # ProcessUnit
    b.PrependUint8Slot(0, 1, 0)
    b.PrependUOffsetTRelativeSlot(1, norm, 0)
    unit = b.EndObject()
    units = tables([unit])
    name = b.CreateString("image")
    b.StartObject(7)  # TensorMetadata
    b.PrependUOffsetTRelativeSlot(0, name, 0)
    b.PrependUOffsetTRelativeSlot(4, units, 0)
    tensor = b.EndObject()
    inputs = tables([tensor])
    b.StartObject(3)  # SubGraphMetadata
    b.PrependUOffsetTRelativeSlot(2, inputs, 0)
    sub = b.EndObject()
    subs = tables([sub])
    title = b.CreateString("test detector")
    b.StartObject(4)  # ModelMetadata
    b.PrependUOffsetTRelativeSlot(0, title, 0)
    b.PrependUOffsetTRelativeSlot(3, subs, 0)
    b.Finish(b.EndObject(), file_identifier=b"M001")
    return bytes(b.Output())


def with_metadata(model: bytes, meta: bytes, buffer_index: int | None = None) -> bytes:
    """The model with ``meta`` in a new buffer named TFLITE_METADATA."""
    m = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    buf = schema.BufferT()
    buf.data = np.frombuffer(meta, np.uint8)
    m.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name = "TFLITE_METADATA"
    entry.buffer = len(m.buffers) - 1 if buffer_index is None else buffer_index
    m.metadata = [*(m.metadata or []), entry]
    b = flatbuffers.Builder(len(model) + len(meta) + 1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


@pytest.fixture
def tagged(tmp_path: Path) -> Path:
    path = tmp_path / "yolov8_meta.tflite"
    path.write_bytes(with_metadata(FLOAT_MODEL.read_bytes(),
                                   model_metadata([127.5, 127.5, 127.5], [127.5, 127.5, 127.5])))
    return path


def _input(det: Detector) -> np.ndarray:
    return det.interp.get_tensor(det.interp.get_input_details()[0]["index"])[0]


def test_the_metadata_is_read_as_written(tagged: Path) -> None:
    assert input_normalization(tagged) == Normalization((127.5,) * 3, (127.5,) * 3)
    assert input_normalization(FLOAT_MODEL) is None  # no metadata: nothing said


def test_a_float_model_is_fed_as_its_metadata_says(tagged: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    img, _ = shapes_scene()
    with caplog.at_level(logging.INFO):
        det = Detector(tagged, LABELS)
    det.detect(img)
    x = _input(det)
    assert -1.0 <= x.min() < -0.5 and 0.5 < x.max() <= 1.0  # (pixel - 127.5) / 127.5
    assert "input normalisation from its metadata: mean [127.5, 127.5, 127.5]" in caplog.text
    # without metadata the same model gets [0, 1], the float default
    plain = Detector(FLOAT_MODEL, LABELS)
    plain.detect(img)
    assert _input(plain).min() >= 0.0
    # the config still decides when it says something
    mine = Detector(tagged, LABELS, preprocess=Preprocess(mean=(0.0, 0.0, 0.0),
                                                          std=(255.0, 255.0, 255.0)))
    mine.detect(img)
    np.testing.assert_allclose(_input(mine), _input(plain), atol=1e-6)


def test_broken_metadata_is_refused_by_name(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(with_metadata(FLOAT_MODEL.read_bytes(), model_metadata([0.0], [0.0])))
    with pytest.raises(MetadataError):
        input_normalization(bad)
    with pytest.raises(DetectorError, match=r"bad\.tflite: its metadata cannot be read"):
        Detector(bad, LABELS)
    # the config's own normalisation makes the model usable without its metadata
    Detector(bad, LABELS, preprocess=Preprocess(mean=(0.0,) * 3, std=(255.0,) * 3))


def test_patrol_agent_detect_runs_the_model_with_its_metadata(tagged: Path,
                                                              tmp_path: Path) -> None:
    img, _ = shapes_scene(640, 360)
    photo = tmp_path / "scene.png"
    cv2.imwrite(str(photo), img)
    r = subprocess.run(agent_cmd("detect", str(photo), "--model", str(tagged), "--labels",
                                 str(LABELS), "--json"), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    (line,) = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
    # what the model gives when told its normalisation in so many words
    told = Detector(FLOAT_MODEL, LABELS, preprocess=Preprocess(mean=(127.5,) * 3,
                                                               std=(127.5,) * 3))
    want = [(d.label, round(d.score, 2)) for d in told.detect(img)]
    assert [(d["label"], round(d["score"], 2)) for d in line["detections"]] == want
