"""Builds tests/models/classifier_int8.tflite: a real int8 image *classifier* (one
[1, 10] output), so tests can check that a model which is not a detector is refused
at start with a clear message. Weights are untrained; only the shape matters.

    pip install -e '.[train]' && python models/train/build_classifier.py
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tensorflow as tf

OUT = Path(__file__).resolve().parents[2] / "tests" / "models" / "classifier_int8.tflite"


def main(seed: int = 1) -> None:
    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((96, 96, 3))
    x = tf.keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inp)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    out = tf.keras.layers.Dense(10, activation="softmax")(x)
    model = tf.keras.Model(inp, out)
    rng = np.random.default_rng(seed)

    def rep() -> Iterator[list[np.ndarray]]:
        for _ in range(20):
            yield [rng.random((1, 96, 96, 3), dtype=np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.uint8
    conv.inference_output_type = tf.int8
    OUT.write_bytes(conv.convert())
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
