"""Benchmark: what the capture size costs and what it buys, on the same drives rendered at
several sizes (``patrol-agent simulate-drive --size``). Prints a table, asserts nothing.

    python benchmarks/bench_resolution.py [--workdir DIR] [--seeds 21-28] [--rounds 3]
    python benchmarks/bench_resolution.py --write    # also into the README's Performance
    python benchmarks/bench_resolution.py --json F   # keep the figures;
    python benchmarks/bench_resolution.py --from-json F --write   # the table from them

For each size (default 640x360, 960x540, 1280x720, 1920x1080) the same seeds' drives are
generated (60 s, the evaluation seeds of the model card) and

* **cost**: ``patrol-agent bench --minutes 0 --backlog 100`` on the first seed's drive,
  ``--rounds`` times per size, the sizes interleaved (one round in order, the next in
  reverse) so that a shared machine's load falls on every size alike: the pipeline's time
  per frame (1 / its fps), the decode and preprocess stages' medians, the picture stage's
  (the privacy step over the whole frame) and capture to commit (the decision, with its
  second look at the best views, and the commit), and the agent's peak RSS. Each figure
  is the median of the rounds', and its ratio the median of its ratios to the first
  size's in the same round: this machine is shared, so its absolute times are noise around
  a trend, the ratios less so;
* **findings**: every drive replayed at full speed with the agent's defaults
  (``patrol-agent replay``) and scored pooled against the drives' ``truth.json``
  (models/train/drives.py, ``agent.evaluate.score``): recall, precision, false findings;
  and the mean size of a finding's picture (the redacted JPEG the office receives);
* **privacy**: how far from the camera a face and a plate still have the pixels the privacy
  step needs to find them, from the camera's field of view (``camera.hfov_deg``) and the
  smallest size in models/privacy/README.md's tables with recall 0.9 or more (a face box
  :data:`FACE_M` tall, a plate :data:`PLATE_M` wide).

The main detector sees 320 px whatever the capture size, so its recall is not expected to
change with it; the second look, the pictures, the privacy step and the frames kept as best
views are what grow with pixels. With ``--workdir`` the drives are kept and reused.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from statistics import mean, median
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "models"))
sys.path.insert(0, str(ROOT / "models" / "train"))

import drives  # noqa: E402  (models/train/drives.py)
import sections  # noqa: E402  (models/sections.py)

from agent.config import CameraConfig, EventsConfig  # noqa: E402
from agent.evaluate import score  # noqa: E402
from agent.pictures import MAX_WAITING  # noqa: E402
from agent.records import iou, parse_iso_utc  # noqa: E402
from agent.simulate.drive import parse_size  # noqa: E402
from agent.store import Store  # noqa: E402

NAME = "resolution"
README = ROOT / "README.md"
SIZES = ((640, 360), (960, 540), (1280, 720), (1920, 1080))
SEEDS = tuple(range(21, 29))
DURATION = 60.0
PRIVACY_README = ROOT / "models" / "privacy" / "README.md"
FACE_M = 0.2
"""A face's box, forehead to chin, in metres."""
PLATE_M = 0.335
"""The narrower Korean plates' width (335 mm; the long white one is 520 mm)."""
RECALL_NEEDED = 0.9
COMMAND = "python benchmarks/bench_resolution.py --write"

Size = tuple[int, int]


def size_text(size: Size) -> str:
    return f"{size[0]}x{size[1]}"


def default_size() -> Size:
    c = CameraConfig()
    return c.width, c.height


# --- drives ----------------------------------------------------------------------------

def make_drives(sizes: Sequence[Size], seeds: Sequence[int], duration: float, work: Path,
                jobs: int) -> dict[Size, dict[int, Path]]:
    """Each seed's drive at each size under ``work/WxH/drive<seed>``; one already there at
    that size, seed and duration is used again."""
    return {size: drives.simulate(seeds, duration, work / size_text(size), jobs, size)
            for size in sizes}


# --- findings --------------------------------------------------------------------------

def findings(by_size: dict[Size, dict[int, Path]], work: Path, jobs: int
             ) -> dict[Size, dict[str, object]]:
    """Every drive replayed with the agent's defaults; scores pooled over the seeds, and the
    mean JPEG bytes of the findings' pictures."""
    runs = [(size, seed) for seed in next(iter(by_size.values())) for size in by_size]

    def one(run: tuple[Size, int]) -> tuple[list[drives.Finding], list[int]]:
        size, seed = run
        db = work / "replays" / f"{size_text(size)}-drive{seed}.db"
        db.parent.mkdir(parents=True, exist_ok=True)
        found = drives.replay(by_size[size][seed], db)
        with Store(db) as s:
            jpegs = [len(e.event.image_jpeg) for e in s.iter_events() if e.event.image_jpeg]
        print(f"replay {seed} {size_text(size)}: {len(found)} findings", file=sys.stderr,
              flush=True)
        return found, jpegs

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        results = dict(zip(runs, pool.map(one, runs), strict=True))
    out: dict[Size, dict[str, object]] = {}
    for size, seeds in by_size.items():
        truth = drives.pooled_truth(seeds)
        found = [f for seed in seeds for f in results[(size, seed)][0]]
        jpegs = [n for seed in seeds for n in results[(size, seed)][1]]
        out[size] = {"scores": score(truth, found).as_json(),
                     "jpeg_bytes_mean": mean(jpegs) if jpegs else None,
                     "pictures": len(jpegs)}
    return out


def picture_distances(drive: Path, db: Path, height: int) -> list[tuple[float, float]]:
    """How far from the camera each finding's object was in the frame its picture shows,
    and how many pixels high it was there (in a frame ``height`` px high): the drive's
    ``frames.jsonl`` object of the same class whose box overlaps the finding's most (IoU
    0.3 or more) in the frame of its capture time."""
    truth = json.loads((drive / "truth.json").read_text())
    start = parse_iso_utc(truth["start_utc"])
    rows = [json.loads(line) for line in (drive / "frames.jsonl").read_text().splitlines()]
    out = []
    with Store(db) as s:
        for e in s.iter_events():
            ev = e.event
            i = round((ev.captured_utc - start).total_seconds() * float(truth["fps"]))
            if not 0 <= i < len(rows):
                continue
            best = max(((iou(tuple(o["box"]), ev.bbox), o["distance_m"],
                         (o["box"][3] - o["box"][1]) * height)
                        for o in rows[i]["objects"] if o["class"] == ev.label), default=None)
            if best is not None and best[0] >= 0.3:
                out.append((float(best[1]), float(best[2])))
    return out


def add_picture_distances(found: dict[Size, dict[str, object]], work: Path,
                          seeds: Sequence[int]) -> None:
    """Each size's median distance and height of a finding's object in its picture, from
    the replays' outboxes and the drives under ``work``."""
    for size, f in found.items():
        d = [x for seed in seeds for x in picture_distances(
            work / size_text(size) / f"drive{seed}",
            work / "replays" / f"{size_text(size)}-drive{seed}.db", size[1])]
        f["picture_distance_m"] = median(x[0] for x in d) if d else None
        f["picture_object_px"] = median(x[1] for x in d) if d else None
        f["picture_distances"] = len(d)


# --- cost ------------------------------------------------------------------------------

STAGES = ("decode", "preprocess", "picture", "capture_to_commit")


def bench_once(drive: Path, out: Path) -> dict[str, object]:
    r = subprocess.run(drives.agent_cmd("bench", "--video", str(drive / "video.mp4"),
                                        "--nmea", str(drive / "track.nmea"), "--minutes", "0",
                                        "--backlog", "100", "--json", str(out)),
                       capture_output=True, text=True, timeout=3600, cwd=ROOT)
    if r.returncode != 0:
        raise RuntimeError(f"bench on {drive} failed:\n{r.stderr[-2000:]}")
    return json.loads(out.read_text())


Figures = dict[str, float | None]
COST_KEYS = ("frame_ms", "peak_rss_mb", *STAGES)


def figures(r: dict[str, Any]) -> Figures:
    """What the table takes from one ``patrol-agent bench --json``."""
    fig: Figures = {"frame_ms": 1000.0 / float(r["pipeline_fps"]),
                    "peak_rss_mb": float(r["peak_rss_mb"])}
    for stage in STAGES:
        v = r["stages"].get(stage, {}).get("median_ms")
        fig[stage] = None if v is None else float(v)
    return fig


def costs(by_size: dict[Size, dict[int, Path]], seed: int, rounds: int, work: Path
          ) -> dict[Size, list[Figures]]:
    """``patrol-agent bench`` on one seed's drive at every size, ``rounds`` times, every
    other round in reverse order; each size's figures, round by round."""
    sizes = list(by_size)
    runs: dict[Size, list[dict[str, object]]] = {s: [] for s in sizes}
    for k in range(rounds):
        for size in sizes if k % 2 == 0 else sizes[::-1]:
            r = bench_once(by_size[size][seed], work / f"bench-{size_text(size)}-{k}.json")
            runs[size].append(r)
            print(f"bench round {k + 1} {size_text(size)}: {r['pipeline_fps']:.0f} fps",
                  file=sys.stderr, flush=True)
    return {size: [figures(r) for r in rs] for size, rs in runs.items()}


def summary(cost: dict[Size, list[Figures]]) -> tuple[dict[Size, Figures], dict[Size, Figures]]:
    """(each figure's median over the rounds, the median over the rounds of its ratio to the
    first size's in the same round): a round's sizes ran minutes apart, the rounds further,
    so the ratio within a round is the one least moved by the machine's other work."""
    base = next(iter(cost))
    values: dict[Size, Figures] = {}
    ratios: dict[Size, Figures] = {}
    for size, rounds in cost.items():
        values[size], ratios[size] = {}, {}
        for k in COST_KEYS:
            vals = [r[k] for r in rounds if r[k] is not None]
            values[size][k] = median(vals) if vals else None  # type: ignore[type-var]
            rs = [r[k] / b[k] for r, b in zip(rounds, cost[base], strict=True)  # type: ignore[operator]
                  if r[k] is not None and b[k]]
            ratios[size][k] = median(rs) if rs else None
    return values, ratios


# --- privacy: pixels on a face and a plate ------------------------------------------------

def smallest_px(section: str | None, column: int) -> int | None:
    """The smallest size (first column) from which on every row's ``column`` is at least
    :data:`RECALL_NEEDED`."""
    if section is None:
        return None
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > abs(column) and re.fullmatch(r"\d+", cells[0]):
            try:
                rows.append((int(cells[0]), float(cells[column])))
            except ValueError:
                continue
    best = None
    for px, recall in sorted(rows, reverse=True):
        if recall < RECALL_NEEDED:
            break
        best = px
    return best


def privacy_px() -> tuple[int | None, int | None]:
    """(face height, plate width) in px that the privacy step finds 9 times in 10, from
    models/privacy/README.md's generated tables."""
    doc = PRIVACY_README.read_text(encoding="utf-8")
    return (smallest_px(sections.current(doc, "face-recall"), 2),
            smallest_px(sections.current(doc, "plate-recall"), -2))


def focal_px(size: Size) -> float:
    """The camera's focal length in pixels at this size (``camera.hfov_deg`` across)."""
    return size[0] / 2 / math.tan(math.radians(CameraConfig().hfov_deg) / 2)


def reach_m(size: Size, object_m: float, px: int | None) -> float | None:
    """How far from the camera an object ``object_m`` across still spans ``px`` pixels."""
    if px is None:
        return None
    return focal_px(size) * object_m / px


# --- the table ---------------------------------------------------------------------------

def _f(v: float | None, fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


def _with_ratio(v: float | None, ratio: float | None, fmt: str, unit: str) -> str:
    if v is None:
        return "n/a"
    if ratio is None:
        return f"{v:{fmt}} {unit}"
    return f"{v:{fmt}} {unit} ({ratio:.2f}x)"


def render(cost: dict[Size, list[Figures]], found: dict[Size, dict[str, object]],
           seeds: Sequence[int], duration: float, rounds: int, bench_seed: int) -> str:
    sizes = list(found)
    base = sizes[0]
    default = default_size()
    face_px, plate_px = privacy_px()

    def label(s: Size) -> str:
        return f"{size_text(s)} (default)" if s == default else size_text(s)

    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    lines = [
        sections.markers(NAME)[0],
        f"Written by `{COMMAND}` ({datetime.now(UTC):%Y-%m-%d}, {os.cpu_count()} CPUs, "
        f"{cpu}, Python {platform.python_version()}); do not edit by hand.",
        "",
        f"Cost: `patrol-agent bench` on drive {bench_seed} rendered at each size, {rounds} "
        f"rounds, sizes interleaved; each stage's median in a run, the median over the "
        f"rounds, and in brackets the median of its ratio to {size_text(base)} in the same "
        f"round. The default is `camera.width` x `camera.height`. A frame held is one BGR "
        f"frame: a live track keeps one, its best view's, and of its other "
        f"{EventsConfig().confirm_views - 1} best views (`events.confirm_views`) only the "
        f"square each one's second look sees; up to {MAX_WAITING} frames wait for their "
        f"pictures.",
        "",
        "| capture size | pixels | pipeline, per frame | decode | preprocess | picture "
        "(privacy step) | capture to commit | peak RSS | a frame held | picture sent |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    values, ratios = summary(cost)
    bj = found[base]["jpeg_bytes_mean"]
    for s in sizes:
        c, q = values[s], ratios[s]
        px = s[0] * s[1]
        jpeg = found[s]["jpeg_bytes_mean"]
        lines.append("| " + " | ".join([
            label(s), f"{px / 1e6:.2f} MP ({px / (base[0] * base[1]):.2f}x)",
            _with_ratio(c["frame_ms"], q["frame_ms"], ".2f", "ms"),
            _with_ratio(c["decode"], q["decode"], ".2f", "ms"),
            _with_ratio(c["preprocess"], q["preprocess"], ".2f", "ms"),
            _with_ratio(c["picture"], q["picture"], ".0f", "ms"),
            _with_ratio(c["capture_to_commit"], q["capture_to_commit"], ".0f", "ms"),
            _with_ratio(c["peak_rss_mb"], q["peak_rss_mb"], ".0f", "MB"),
            f"{px * 3 / 1e6:.1f} MB",
            _with_ratio(None if jpeg is None else float(jpeg) / 1024,  # type: ignore[arg-type]
                        None if jpeg is None or not bj else float(jpeg) / float(bj),  # type: ignore[arg-type]
                        ".0f", "KB"),
        ]) + " |")
    lines += [
        "",
        f"Findings: drives {drives.seeds_text(seeds)} ({duration:g} s) at each size, replayed "
        f"with the agent's defaults and scored pooled against their truth. Object in the "
        f"picture: the median distance from the camera and height of a finding's object in "
        f"the frame its picture shows (the drives' frames.jsonl); a face there: how high a "
        f"face at that distance is. Privacy: "
        f"how far "
        f"from the camera ({CameraConfig().hfov_deg:g} degrees across) a face ({FACE_M:g} m "
        f"box) spans the {_f(face_px, 'd')} px and a plate ({PLATE_M * 1000:.0f} mm) the "
        f"{_f(plate_px, 'd')} px at which models/privacy/README.md measures the privacy step's "
        f"recall at {RECALL_NEEDED:g} or more.",
        "",
        "| capture size | objects found | recall | precision | findings | false findings "
        "| pictures | object in the picture | a face there | face found up to "
        "| plate found up to |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in sizes:
        sc = found[s]["scores"]
        assert isinstance(sc, dict)
        dist = found[s].get("picture_distance_m")
        assert dist is None or isinstance(dist, float)
        lines.append("| " + " | ".join([
            label(s), f"{sc['matched']} of {sc['objects']}", f"{sc['recall']:.2f}",
            f"{sc['precision']:.2f}", str(sc["events"]), str(sc["false_positives"]),
            str(found[s]["pictures"]),
            "n/a" if dist is None else
            f"{dist:.1f} m away, {_f(found[s].get('picture_object_px'), '.0f')} px high",  # type: ignore[arg-type]
            "n/a" if dist is None else f"{focal_px(s) * FACE_M / dist:.0f} px",
            _f(reach_m(s, FACE_M, face_px), ".1f") + " m",
            _f(reach_m(s, PLATE_M, plate_px), ".1f") + " m",
        ]) + " |")
    lines.append(sections.markers(NAME)[1])
    return "\n".join(lines)


def before_next_heading(doc: str, text: str) -> str:
    """A new section goes at the end of the README's Performance section."""
    m = re.search(r"^## Performance\n", doc, re.M)
    if m is None:
        return sections.at_end(doc, text)
    nxt = re.search(r"^## ", doc[m.end():], re.M)
    if nxt is None:
        return sections.at_end(doc, text)
    at = m.end() + nxt.start()
    return doc[:at].rstrip("\n") + "\n\n" + text + "\n\n" + doc[at:]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", type=parse_size, default=list(SIZES),
                   help="WxH sizes, the first the reference (default: "
                   + " ".join(size_text(s) for s in SIZES) + ")")
    p.add_argument("--seeds", type=drives.parse_seeds, default=list(SEEDS),
                   help="drive seeds, e.g. 21-24 (default 21-28)")
    p.add_argument("--duration", type=float, default=DURATION, help="seconds per drive")
    p.add_argument("--rounds", type=int, default=3, help="bench runs per size (default 3)")
    p.add_argument("--workdir", help="keep the drives and outboxes here (reused next time)")
    p.add_argument("--jobs", type=int, default=2, help="drives made and replayed at once")
    p.add_argument("--json", help="also write every figure to this file")
    p.add_argument("--from-json", metavar="FILE",
                   help="make the table from an earlier run's --json instead of measuring")
    p.add_argument("--write", action="store_true", help="put the table into README.md")
    args = p.parse_args(argv)
    if args.from_json:
        data = json.loads(Path(args.from_json).read_text())
        settings = data.pop("settings", {})
        sizes = [parse_size(k) for k in data]
        cost = {s: data[size_text(s)].pop("cost_rounds") for s in sizes}
        found = {s: data[size_text(s)] for s in sizes}
        if args.workdir and any("picture_distance_m" not in f for f in found.values()):
            add_picture_distances(found, Path(args.workdir), settings.get("seeds", args.seeds))
        text = render(cost, found, settings.get("seeds", args.seeds),
                      settings.get("duration", args.duration),
                      settings.get("rounds", args.rounds),
                      settings.get("bench_seed", args.seeds[0]))
        return sections.publish(README, NAME, text, write=args.write, check=False,
                                fix=COMMAND, missing=before_next_heading)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir) if args.workdir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        by_size = make_drives(args.sizes, args.seeds, args.duration, work, args.jobs)
        found = findings(by_size, work, args.jobs)
        add_picture_distances(found, work, args.seeds)
        cost = costs(by_size, args.seeds[0], args.rounds, work)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"settings": {"seeds": args.seeds, "duration": args.duration,
                          "rounds": args.rounds, "bench_seed": args.seeds[0]},
             **{size_text(s): {"cost_rounds": cost[s], **found[s]} for s in args.sizes}},
            indent=1) + "\n")
    text = render(cost, found, args.seeds, args.duration, args.rounds, args.seeds[0])
    return sections.publish(README, NAME, text, write=args.write, check=False, fix=COMMAND,
                            missing=before_next_heading)


if __name__ == "__main__":
    sys.exit(main())
