"""Makes samples/findings.jsonl: a handful of findings along a street, with
small drawn pictures, in the format of `patrol-agent events export --with-images`.

Run once; the output is committed. Deterministic for a given seed:
    python samples/make_findings.py
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np

# Beside Goyang City Hall (Deogyang-gu, Goyang-si), heading north; one finding every ~60 m.
START = (37.65790, 126.83140)
LABELS = ["garbage", "banner", "construction", "garbage", "banner", "construction"]


def picture(label: str, rng: np.random.Generator) -> bytes:
    img = np.full((240, 320, 3), (170, 180, 175), np.uint8)  # sky/buildings
    cv2.rectangle(img, (0, 150), (320, 240), (90, 90, 95), -1)  # road
    cv2.rectangle(img, (0, 140), (320, 150), (160, 160, 160), -1)  # kerb
    x = int(rng.integers(40, 200))
    if label == "garbage":
        for k in range(4):
            cv2.ellipse(img, (x + 18 * k, 140 - 6 * (k % 2)), (16, 12), 0, 0, 360,
                        (30, 30, 30) if k % 2 else (40, 120, 200), -1)
    elif label == "banner":
        cv2.line(img, (x, 70), (x, 150), (60, 60, 60), 3)
        cv2.line(img, (x + 90, 70), (x + 90, 150), (60, 60, 60), 3)
        cv2.rectangle(img, (x, 70), (x + 90, 100), (40, 40, 220), -1)
        cv2.putText(img, "SALE", (x + 12, 94), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2)
    else:
        for k in range(3):
            cv2.rectangle(img, (x + 30 * k, 110), (x + 30 * k + 25, 150), (0, 140, 255), -1)
            cv2.rectangle(img, (x + 30 * k, 122), (x + 30 * k + 25, 128), (255, 255, 255), -1)
    img = cv2.add(img, rng.integers(0, 12, img.shape, dtype=np.uint8))
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
    assert ok
    return buf.tobytes()


def main(seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    t0 = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
    out = Path(__file__).with_name("findings.jsonl")
    lines = []
    for i, label in enumerate(LABELS):
        ts = t0 + timedelta(seconds=9 * i)
        # UUIDv7 from the capture time, so the sample's ids sort in drive order.
        ms = int(ts.timestamp() * 1000)
        rnd = int.from_bytes(rng.bytes(10), "big") & ((1 << 76) - 1)
        n = (ms << 80) | (0x7 << 76) | (((rnd >> 62) & 0xFFF) << 64) | (0b10 << 62) | (
            rnd & ((1 << 62) - 1))
        h = f"{n:032x}"
        rec = {
            "id": f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}",
            "captured_at": ts.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "captured_mono": 1000.0 + 9 * i,
            "label": label,
            "score": round(float(rng.uniform(0.6, 0.95)), 3),
            "bbox": [0.2, 0.35, 0.55, 0.65],
            "position": {"lat": round(START[0] + 0.00055 * i, 6), "lon": START[1],
                         "accuracy_m": 4.0, "source": "vehicle"},
            "model": "sample",
            "config_version": 1,
            "attributes": {"sample": True},
            "image_b64": base64.b64encode(picture(label, rng)).decode(),
        }
        lines.append(json.dumps(rec, separators=(",", ":")))
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {len(lines)} findings to {out}")


if __name__ == "__main__":
    main()
