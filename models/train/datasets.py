"""Labelled photo data sets in four forms, read into one record type, mapped onto our classes
and split by recording: the input side of ``models/train/train_dataset.py``.

    samples = read(Path("DATA"))                   # form detected: coco, yolo, voc or aihub
    cmap = ClassMap.load(Path("classes.toml"), data.CLASSES)
    cmap.check(samples)                            # every label the set uses must be mapped
    parts = split(samples, seed=1)                 # {"train", "val", "held_out"}, by recording

Every reader gives :class:`Sample` records: the photo's absolute path; its size in pixels (the
annotation's when it states one, else the file's as ``cv2.imread`` decodes it, which is how the
trainer reads it too); its boxes in the photo's own pixels as continuous corners (a box over
pixel columns 0..9 is x1=0, x2=10) under the set's own class names; and the recording it
belongs to. Samples come sorted by image path, whatever order the files were listed in.

Forms
-----
``coco``: one JSON file with ``images`` (``id``, ``file_name``, ``width``, ``height``),
``annotations`` (``id``, ``image_id``, ``category_id``, ``bbox`` = [x, y, w, h] in pixels from
the top-left corner; ``iscrowd`` boxes are kept as they are) and ``categories`` (``id``,
``name``). ``file_name`` is relative to the images directory: by default the JSON's own
directory, then ``images/`` beside the JSON. Images without annotations are kept (negatives).

``yolo``: ``images/**/*.jpg|png|...`` with ``labels/<same relative path>.txt``, either at the
root or once per split (Roboflow's ``train/images`` + ``train/labels``); Ultralytics'
``images/train``, ``images/val``, ... are all read, since the split is ours. A line is
``class cx cy w h`` normalised to the photo; a sixth column (a confidence) is ignored; an odd
number of columns from seven up is a segment polygon ``class x1 y1 x2 y2 x3 y3 ...``, read as
its bounding box. Class names come from ``data.yaml`` (or another ``*.yaml`` at the root)
``names``, a list or an ``{id: name}`` mapping, else from ``classes.txt`` / ``obj.names`` /
``names`` (one per line, at the root or in ``labels/``). No label file, or an empty one: a
negative.

``voc``: ``Annotations/*.xml`` with images in ``JPEGImages/`` found by ``<filename>``, else by
the XML's stem. Each ``<object>`` gives ``<name>`` and ``<bndbox>`` ``xmin ymin xmax ymax``;
VOC pixels are numbered from 1, so 1 is taken off ``xmin`` and ``ymin`` (``xmax``/``ymax``
already are the continuous right/bottom edges). ``<difficult>1`` objects are kept. ``<size>``
gives the photo's size when it is there and not 0.

``aihub``: a directory of per-image JSON label files, the form of the labelled photo sets on
AI-Hub (aihub.or.kr, Korea's national AI data hub). AI-Hub has no single schema: each set has
its own, so this reader takes the fields the published converters read, tolerant of the
spellings (every key below is matched ignoring case):

* image: under ``images`` (a dict, or a list of one dict), ``image`` or ``IMAGE_INFO``, else the
  top level: file name ``file_name`` / ``filename`` / ``FILE_NAME`` / ``image_name``; size
  ``width`` / ``height`` or ``IMAGE_WIDTH`` / ``IMAGE_HEIGHT`` (else read from the file); a
  recording from ``video_id`` / ``sequence`` / ``seq_id`` / ``sequence_id``. No file name:
  the image with the JSON's stem. The image is looked for beside the JSON, then in the JSON's
  sibling directories (AI-Hub ships ``원천데이터`` photos beside ``라벨링데이터`` labels), then
  by name anywhere under the root (refused if that name is there twice).
* annotations: a list (or one dict) under ``annotations``, ``annotation``, ``objects`` or
  ``ANNOTATION_INFO``; an empty list is a negative.
* class: a name from ``category_name``, ``class``, ``label``, ``class_name`` or
  ``object_class``; else ``category_id`` resolved through the file's ``categories`` (a list of
  ``{id, name}`` or an ``{id: name}`` mapping), or, when the file has no ``categories``, the
  id itself as the label (so the mapping file names it, e.g. ``"4" = "garbage"``).
* box: ``bbox`` = [x, y, w, h] (or ``{x, y, w|width, h|height}``); ``box`` / ``bndbox`` =
  [x1, y1, x2, y2] (or ``{xmin, ymin, xmax, ymax}`` / ``{x1, y1, x2, y2}``); ``points`` as
  [[x1, y1], [x2, y2]] corners, a polygon [[x, y], ...] or ``[{x, y}, ...]`` (its bounding
  box), or [[x, y, w, h]] (``SHAPE_TYPE`` ``BOX``); ``polygon`` likewise; ``segmentation`` as
  COCO polygons [[x1, y1, x2, y2, ...], ...].

Where the forms come from (public converters, read through the project's search of public
code): the ``images``/``image`` + ``annotations`` (``category_id``, ``bbox`` [x, y, w, h]) form
is AI-Hub's road obstacle set as read by github.com/juooo1117/ROADs (``README.md`` and
``modeling/model_training_3.ipynb``: ``data['images'][0]['file_name']``, ``width``,
``height``, ``annotation['category_id']``, ``annotation['bbox']``); the ``IMAGE_INFO`` /
``ANNOTATION_INFO`` form (``FILE_NAME``, ``IMAGE_WIDTH``, ``IMAGE_HEIGHT``; ``CLASS``,
``SHAPE_TYPE`` ``BOX`` with ``POINTS`` [[x, y, w, h]] or ``POLYGON`` with ``POINTS``
[[x, y], ...]) is AI-Hub's household waste photo set (생활 폐기물 이미지: its classes 금속캔,
종이, 페트병, ...) as read by github.com/BUNRI-WIKI/project-workflow
(``src/models/yolo/dataset.py``). The other spellings (``annotation``, ``objects``,
``class``, ``label``, ``box``/``bndbox``, ``points`` corners) are accepted alike for sets
that spell them so; no one converter is their source. A JSON in none of these forms is
refused with the keys it has, so a new AI-Hub set's form is seen at once, not silently read
as empty.

Bad input
---------
Anything the reader cannot use as it is raises :class:`DatasetError` naming the file (and the
line or annotation) and the problem: a missing image, unreadable JSON/XML, a YOLO class id out
of range or coordinates that are not normalised, a category that is not defined, a box that
is not four numbers. A box reaching outside its photo is the one slip a user wants fixed
rather than refused: it is clipped to the photo, and one with no area left is dropped; both
are counted in one warning per read.

Recordings
----------
``Sample.group`` is the recording a photo belongs to: the set's own ``video_id`` /
``sequence`` / ``seq_id`` when it has one (COCO, AI-Hub), else :func:`group_of` the file name:
its directory plus its stem with one trailing frame number taken off (``drive7_000123.jpg``
and ``drive7_000124.jpg`` are both ``drive7``). Camera-roll names (``IMG_0001.jpg``) therefore
share one group per directory: over-cautious, never a leak.

Class mapping
-------------
A TOML file maps each label the set uses to one of our classes, to ``"ignore"`` (neither
object nor background: training ignores the region, id -1) or to ``"background"`` (the box is
dropped: the region is a negative like any other); ``models/train/classes.example.toml``
shows it. :meth:`ClassMap.check` refuses a set that uses a label the file does not mention,
listing every such label with its box count, so nobody trains on a half-mapped set.

Split
-----
:func:`split` puts whole recordings into ``train``, ``val`` and ``held_out``, never single
frames (a recording's frames are near-copies: one on each side is a leak), decided by the seed
and the group names alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import tomllib
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2

from agent.sources import IMAGE_SUFFIXES  # what a folder camera source reads, read here too

log = logging.getLogger("datasets")

FORMATS = ("coco", "yolo", "voc", "aihub")
# directory names that are a data set's own split, not a recording (dropped from groups, so
# that frames the set's author split by image still share one group here)
SPLIT_DIRS = frozenset({"train", "training", "val", "valid", "validation", "test", "testing"})
IGNORE, BACKGROUND = "ignore", "background"
SEQUENCE_KEYS = ("video_id", "sequence", "seq_id", "sequence_id")

Target = tuple[int, float, float, float, float]


class DatasetError(ValueError):
    """A data set or mapping file that cannot be used as it is: the message names the file
    (and the line or annotation id) and the problem."""


@dataclass(frozen=True)
class Box:
    """A labelled box in the photo's own pixels, under the data set's own class name."""

    label: str
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(frozen=True)
class Sample:
    """One labelled photo."""

    image: Path  # absolute path of the photo file
    width: int
    height: int
    boxes: tuple[Box, ...]
    group: str  # the recording the photo belongs to


# --- shared helpers ---------------------------------------------------------------------------


class _Tally:
    """Clips boxes to their photo over one read and counts what it changed: a box drawn a
    little past the frame edge is an everyday labelling slip, reported once, not refused."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.clipped = 0
        self.dropped = 0
        self.first = ""

    def box(self, label: str, coords: Sequence[float], width: int, height: int,
            where: str) -> Box | None:
        x1, y1, x2, y2 = coords
        if not all(math.isfinite(v) for v in coords):
            raise DatasetError(f"{where}: box {list(coords)} has a coordinate that is not a "
                               "finite number")
        cx1, cx2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
        cy1, cy2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
        if cx2 <= cx1 or cy2 <= cy1:
            self.dropped += 1
            self.first = self.first or where
            return None
        if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
            self.clipped += 1
            self.first = self.first or where
        return Box(label, cx1, cy1, cx2, cy2)

    def report(self) -> None:
        if self.clipped or self.dropped:
            log.warning("%s: %d boxes reached outside their photo and were clipped to it; "
                        "%d had no area inside it and were dropped (first: %s)",
                        self.what, self.clipped, self.dropped, self.first)


def _num(value: Any, where: str, what: str) -> float:
    """A coordinate or size as a float; AI-Hub files sometimes hold numbers as strings."""
    if isinstance(value, bool):
        raise DatasetError(f"{where}: {what} is {value!r}, not a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: {what} is {value!r}, not a number") from None


def _size(value: Any, where: str, what: str) -> int | None:
    """A stated image width/height, or None when the annotation leaves it out (or says 0,
    as some VOC exporters do), so the file is read instead."""
    if value is None or value == "":
        return None
    v = _num(value, where, what)
    if v != int(v) or v < 0:
        raise DatasetError(f"{where}: {what} is {value!r}, not a whole number of pixels")
    return int(v) or None


def _image_size(path: Path, where: str) -> tuple[int, int]:
    # IMREAD_COLOR applies the EXIF orientation, as the trainer's own cv2.imread does, so the
    # size is that of the pixels the boxes will be laid on
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DatasetError(f"{where}: {path} is not a readable image")
    return int(img.shape[1]), int(img.shape[0])


def _load_json(path: Path) -> Any:
    try:
        # utf-8-sig: AI-Hub label files are often written with a byte-order mark
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DatasetError(f"{path}: not readable JSON: {e}") from None


def _images_under(d: Path) -> list[Path]:
    return sorted(p for p in d.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _sequence(info: dict[str, Any]) -> str | None:
    for k in SEQUENCE_KEYS:
        v = _get(info, k)
        if v is not _MISSING and v is not None and v != "":
            return str(v)
    return None


_FRAME = re.compile(r"[_-]?\d+$")


def group_of(path: Path, root: Path) -> str:
    """The recording a photo belongs to, from its file name: its directory relative to the
    data set ``root`` plus its stem with one trailing frame number (``[_-]?\\d+``) taken off,
    so ``drive7_000123.jpg`` and ``drive7_000124.jpg`` share ``drive7``; a photo whose stem is
    all digits belongs to its directory's group; one with no trailing number is its own."""
    try:
        rel = path.absolute().relative_to(root.absolute())
    except ValueError:
        rel = Path(path.name)
    stem = _FRAME.sub("", rel.stem, count=1)
    parent = rel.parent.as_posix()
    if not stem:
        return parent
    return stem if parent == "." else f"{parent}/{stem}"


def _finish(samples: list[Sample]) -> list[Sample]:
    return sorted(samples, key=lambda s: str(s.image))


# --- COCO -------------------------------------------------------------------------------------


def _is_coco(doc: Any) -> bool:
    return isinstance(doc, dict) and all(k in doc for k in ("images", "annotations",
                                                            "categories"))


def read_coco(json_path: Path, images: Path | None = None) -> list[Sample]:
    """A COCO detection file; ``images`` is the directory ``file_name`` is relative to
    (default: the JSON's directory, then ``images/`` beside it)."""
    json_path = Path(json_path)
    doc = _load_json(json_path)
    if not _is_coco(doc):
        keys = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
        raise DatasetError(f"{json_path}: not a COCO file: needs 'images', 'annotations' and "
                           f"'categories'; it has {keys}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc[key], list):
            raise DatasetError(f"{json_path}: '{key}' is not a list")
    cats: dict[Any, str] = {}
    for c in doc["categories"]:
        if not isinstance(c, dict) or "id" not in c or not isinstance(c.get("name"), str):
            raise DatasetError(f"{json_path}: category {c!r} needs an 'id' and a 'name'")
        cats[c["id"]] = c["name"]
    entries: dict[Any, dict[str, Any]] = {}
    for e in doc["images"]:
        if not isinstance(e, dict) or "id" not in e or not e.get("file_name"):
            raise DatasetError(f"{json_path}: image {e!r} needs an 'id' and a 'file_name'")
        if e["id"] in entries:
            raise DatasetError(f"{json_path}: image id {e['id']} is listed twice")
        entries[e["id"]] = e
    raw: dict[Any, list[tuple[str, list[float], str]]] = {i: [] for i in entries}
    for k, a in enumerate(doc["annotations"]):
        aid = a.get("id", f"#{k}") if isinstance(a, dict) else f"#{k}"
        where = f"{json_path}: annotation {aid}"
        if not isinstance(a, dict):
            raise DatasetError(f"{where}: not an object")
        if a.get("image_id") not in entries:
            raise DatasetError(f"{where}: image_id {a.get('image_id')!r} is not in 'images'")
        if a.get("category_id") not in cats:
            raise DatasetError(f"{where}: category_id {a.get('category_id')!r} is not in "
                               f"'categories' (ids {sorted(cats, key=str)})")
        bbox = a.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise DatasetError(f"{where}: bbox {bbox!r} is not [x, y, w, h]")
        x, y, w, h = (_num(v, where, "bbox") for v in bbox)
        raw[a["image_id"]].append((cats[a["category_id"]], [x, y, x + w, y + h], where))
    bases = [Path(images)] if images is not None else [json_path.parent,
                                                       json_path.parent / "images"]
    tally = _Tally(str(json_path))
    out = []
    for iid, e in entries.items():
        where = f"{json_path}: image {iid}"
        base = next((b for b in bases if (b / e["file_name"]).is_file()), None)
        if base is None:
            raise DatasetError(f"{where}: {e['file_name']} not found in "
                               f"{' or '.join(str(b) for b in bases)}")
        path = base / e["file_name"]
        w, h = _size(e.get("width"), where, "width"), _size(e.get("height"), where, "height")
        if w is None or h is None:
            w, h = _image_size(path, where)
        boxes = (tally.box(label, c, w, h, aw) for label, c, aw in raw[iid])
        out.append(Sample(path.absolute(), w, h, tuple(b for b in boxes if b),
                          _sequence(e) or group_of(path, base)))
    tally.report()
    return _finish(out)


# --- YOLO -------------------------------------------------------------------------------------


def _unquote(s: str) -> str:
    s = s.strip()
    if len(s) >= 2 and s[0] == s[-1] == '"':
        return str(json.loads(s))
    if len(s) >= 2 and s[0] == s[-1] == "'":
        return s[1:-1].replace("''", "'")
    return s


def _split_outside_quotes(s: str, sep: str) -> list[str]:
    parts, cur, quote = [], "", ""
    for ch in s:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == sep:
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    parts.append(cur)
    return parts


def _strip_comment(line: str) -> str:
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def _yaml_names(path: Path) -> dict[int, str] | None:
    """``names`` from a YOLO data YAML, without a YAML library (the project has none): the
    forms Ultralytics and Roboflow write, ``names: [a, b]``, ``names: {0: a, 1: b}``, or a
    block list (``- a``) or block mapping (``0: a``) under ``names:``."""
    try:
        lines = [_strip_comment(x).rstrip() for x in path.read_text(encoding="utf-8-sig")
                 .splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: not readable: {e}") from None
    for i, line in enumerate(lines):
        m = re.match(r"names\s*:(.*)$", line)  # top level only: indented keys are not ours
        if not m:
            continue
        rest, j = m.group(1).strip(), i + 1
        if rest[:1] in ("[", "{"):
            close = "]" if rest[0] == "[" else "}"
            while not rest.endswith(close) and j < len(lines):  # a flow list over lines
                rest, j = rest + " " + lines[j].strip(), j + 1
            if not rest.endswith(close):
                raise DatasetError(f"{path}:{i + 1}: names: no closing {close}")
            items = [x for x in _split_outside_quotes(rest[1:-1], ",") if x.strip()]
            if close == "]":
                return {k: _unquote(x) for k, x in enumerate(items)}
            pairs = [_split_outside_quotes(x, ":") for x in items]
        elif rest:
            raise DatasetError(f"{path}:{i + 1}: names: expected a list or a mapping, got "
                               f"{rest!r}")
        else:
            block = []
            while j < len(lines) and (not lines[j].strip() or lines[j][:1].isspace()):
                if lines[j].strip():
                    block.append((j + 1, lines[j].strip()))
                j += 1
            if all(x.startswith("-") for _, x in block):
                return {k: _unquote(x[1:]) for k, (_, x) in enumerate(block)}
            pairs = [_split_outside_quotes(x, ":") for _, x in block]
        names: dict[int, str] = {}
        for p in pairs:
            try:
                names[int(_unquote(p[0]))] = _unquote(":".join(p[1:]))
            except ValueError:
                raise DatasetError(f"{path}: names: {':'.join(p)!r} is not 'id: name'") from None
        return names
    return None


def _text_names(path: Path) -> dict[int, str]:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: not readable: {e}") from None
    while lines and not lines[-1].strip():
        lines.pop()
    for n, x in enumerate(lines, 1):
        if not x.strip():  # a blank line would shift every later class id by one
            raise DatasetError(f"{path}:{n}: empty class name")
    return {k: x.strip() for k, x in enumerate(lines)}


def _yolo_names(root: Path) -> tuple[dict[int, str], Path]:
    yamls = [root / "data.yaml", root / "dataset.yaml"]
    yamls += [p for p in sorted(root.glob("*.y*ml")) if p not in yamls]
    for y in yamls:
        if y.is_file() and (names := _yaml_names(y)) is not None:
            return names, y
    for t in (root / "classes.txt", root / "obj.names", root / "names",
              root / "labels" / "classes.txt"):
        if t.is_file():
            return _text_names(t), t
    raise DatasetError(f"{root}: no class names: looked for 'names' in data.yaml (or another "
                       "*.yaml) and for classes.txt, obj.names, names, labels/classes.txt")


def _yolo_dirs(root: Path) -> list[tuple[Path, Path]]:
    """(images dir, labels dir) pairs: root/images + root/labels, and per-split
    root/<split>/images + root/<split>/labels (Roboflow's export)."""
    pairs = []
    if (root / "labels").is_dir():
        pairs.append((root / "images", root / "labels"))
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if (d / "images").is_dir() and (d / "labels").is_dir():
            pairs.append((d / "images", d / "labels"))
    return pairs


def _yolo_line(line: str, names: dict[int, str], names_src: Path, w: int, h: int,
               where: str) -> tuple[str, list[float]]:
    parts = line.split()
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise DatasetError(f"{where}: not numbers: {line.strip()!r}") from None
    if values[0] != int(values[0]):
        raise DatasetError(f"{where}: class id {parts[0]} is not a whole number")
    cls, coords = int(values[0]), values[1:]
    if cls not in names:
        raise DatasetError(f"{where}: class id {cls} is out of range: {names_src} names "
                           f"{len(names)} classes ({min(names, default=0)}.."
                           f"{max(names, default=-1)})")
    if len(coords) in (4, 5):  # cx cy w h [confidence]
        cx, cy, bw, bh = coords[:4]
        xs, ys = [cx - bw / 2, cx + bw / 2], [cy - bh / 2, cy + bh / 2]
        if bw < 0 or bh < 0:
            xs, ys = [cx, cx], [cy, cy]  # no area: dropped and counted, like any empty box
    elif len(coords) >= 6 and len(coords) % 2 == 0:  # segment polygon: its bounding box
        xs, ys = coords[0::2], coords[1::2]
    else:
        raise DatasetError(f"{where}: {len(parts)} columns: expected 'class cx cy w h' (a "
                           "sixth column being a confidence) or a polygon 'class x1 y1 x2 y2 "
                           "x3 y3 ...'")
    if any(abs(v) > 1.5 for v in (coords[:4] if len(coords) in (4, 5) else coords)):
        raise DatasetError(f"{where}: coordinates {coords} are not normalised to 0..1 (pixels "
                           "instead of fractions of the photo?)")
    return names[cls], [min(xs) * w, min(ys) * h, max(xs) * w, max(ys) * h]


def read_yolo(root: Path) -> list[Sample]:
    """A YOLO (darknet / Ultralytics / Roboflow) directory: see the module docstring."""
    root = Path(root)
    pairs = _yolo_dirs(root) if root.is_dir() else []
    if not pairs:
        raise DatasetError(f"{root}: not a YOLO set: no labels/ directory (nor "
                           "<split>/images + <split>/labels)")
    names, names_src = _yolo_names(root)
    tally = _Tally(str(root))
    out = []
    for img_dir, lbl_dir in pairs:
        images = _images_under(img_dir) if img_dir.is_dir() else []
        stems = {p.relative_to(img_dir).with_suffix("") for p in images}
        for lbl in sorted(lbl_dir.rglob("*.txt")) if lbl_dir.is_dir() else []:
            rel = lbl.relative_to(lbl_dir).with_suffix("")
            if rel.as_posix() == "classes":
                continue
            if rel not in stems:
                raise DatasetError(f"{lbl}: no image for this label file (looked for "
                                   f"{img_dir / rel}.jpg, .png, ...)")
        for path in images:
            rel = path.relative_to(img_dir)
            where = str(path)
            w, h = _image_size(path, where)
            lbl = (lbl_dir / rel).with_suffix(".txt")
            boxes = []
            if lbl.is_file():
                try:
                    text = lbl.read_text(encoding="utf-8-sig")
                except (OSError, UnicodeDecodeError) as e:
                    raise DatasetError(f"{lbl}: not readable: {e}") from None
                for n, line in enumerate(text.splitlines(), 1):
                    if line.strip():
                        label, c = _yolo_line(line, names, names_src, w, h, f"{lbl}:{n}")
                        boxes.append(tally.box(label, c, w, h, f"{lbl}:{n}"))
            # Ultralytics' images/train, images/val: the author's split, not a recording
            parts = rel.parts
            group_root = img_dir / parts[0] if len(parts) > 1 and parts[0].lower() in \
                SPLIT_DIRS else img_dir
            out.append(Sample(path.absolute(), w, h, tuple(b for b in boxes if b),
                              group_of(path, group_root)))
    tally.report()
    return _finish(out)


# --- Pascal VOC -------------------------------------------------------------------------------


def read_voc(root: Path) -> list[Sample]:
    """A Pascal VOC directory: ``Annotations/*.xml`` and ``JPEGImages/``."""
    root = Path(root)
    ann_dir, img_dir = root / "Annotations", root / "JPEGImages"
    xmls = sorted(ann_dir.rglob("*.xml")) if ann_dir.is_dir() else []
    if not xmls:
        raise DatasetError(f"{ann_dir}: no .xml annotation files: not a VOC set")
    tally = _Tally(str(root))
    out = []
    for x in xmls:
        try:
            doc = ET.parse(x).getroot()
        except (ET.ParseError, OSError) as e:
            raise DatasetError(f"{x}: not readable XML: {e}") from None
        fn = (doc.findtext("filename") or "").strip()
        tried = [img_dir / fn] if fn else []
        tried += [img_dir / x.relative_to(ann_dir).with_suffix(s) for s in IMAGE_SUFFIXES]
        path = next((p for p in tried if p.is_file()), None)
        if path is None:
            raise DatasetError(f"{x}: image {fn or x.stem + '.*'} not found in {img_dir}")
        size = doc.find("size")
        w = _size(size.findtext("width") if size is not None else None, str(x), "width")
        h = _size(size.findtext("height") if size is not None else None, str(x), "height")
        if w is None or h is None:
            w, h = _image_size(path, str(x))
        boxes = []
        for k, obj in enumerate(doc.findall("object")):
            where = f"{x}: object {k + 1}"
            name = (obj.findtext("name") or "").strip()
            bb = obj.find("bndbox")
            if not name or bb is None:
                raise DatasetError(f"{where}: needs a <name> and a <bndbox>")
            xmin, ymin, xmax, ymax = (_num(bb.findtext(t), where, f"<{t}>")
                                      for t in ("xmin", "ymin", "xmax", "ymax"))
            # VOC numbers pixels from 1 and its max is inclusive: pixel xmin's left edge is
            # xmin - 1, pixel xmax's right edge is xmax
            boxes.append(tally.box(name, [xmin - 1, ymin - 1, xmax, ymax], w, h, where))
        out.append(Sample(path.absolute(), w, h, tuple(b for b in boxes if b),
                          group_of(path, img_dir)))
    tally.report()
    return _finish(out)


# --- AI-Hub -----------------------------------------------------------------------------------


class _Missing:
    pass


_MISSING: Any = _Missing()


def _get(d: dict[str, Any], *names: str) -> Any:
    """The first of ``names`` in ``d``, matched ignoring case (AI-Hub sets spell the same key
    ``file_name``, ``FILE_NAME`` or ``FileName``)."""
    low = {k.lower(): k for k in d if isinstance(k, str)}
    for n in names:
        if n in low:
            return d[low[n]]
    return _MISSING


def _xywh(v: Any, where: str) -> list[float]:
    if isinstance(v, dict):
        x, y = _get(v, "x"), _get(v, "y")
        w, h = _get(v, "w", "width"), _get(v, "h", "height")
        v = [x, y, w, h]
    if not isinstance(v, list | tuple) or len(v) != 4 or _MISSING in v:
        raise DatasetError(f"{where}: bbox {v!r} is not [x, y, w, h]")
    x, y, w, h = (_num(c, where, "bbox") for c in v)
    return [x, y, x + w, y + h]


def _xyxy(v: Any, where: str) -> list[float]:
    if isinstance(v, dict):
        v = [_get(v, "xmin", "x1"), _get(v, "ymin", "y1"), _get(v, "xmax", "x2"),
             _get(v, "ymax", "y2")]
    if isinstance(v, list) and len(v) == 2 and all(isinstance(p, list) for p in v):
        return _corners(v, where)
    if not isinstance(v, list | tuple) or len(v) != 4 or _MISSING in v:
        raise DatasetError(f"{where}: box {v!r} is not [x1, y1, x2, y2]")
    x1, y1, x2, y2 = (_num(c, where, "box") for c in v)
    return [x1, y1, x2, y2]


def _corners(points: Iterable[Any], where: str) -> list[float]:
    """The bounding box of points given as [x, y] pairs or {x, y} objects."""
    xs, ys = [], []
    for p in points:
        if isinstance(p, dict):
            p = [_get(p, "x"), _get(p, "y")]
        if not isinstance(p, list | tuple) or len(p) != 2 or _MISSING in p:
            raise DatasetError(f"{where}: point {p!r} is not [x, y]")
        xs.append(_num(p[0], where, "point x"))
        ys.append(_num(p[1], where, "point y"))
    if len(xs) < 2:
        raise DatasetError(f"{where}: {len(xs)} point(s): a box needs at least two")
    return [min(xs), min(ys), max(xs), max(ys)]


def _points(v: Any, where: str) -> list[float]:
    if not isinstance(v, list) or not v:
        raise DatasetError(f"{where}: points {v!r} are not a list of points")
    # household waste form: SHAPE_TYPE BOX, POINTS [[x, y, w, h]]
    if len(v) == 1 and isinstance(v[0], list) and len(v[0]) == 4:
        return _xywh(v[0], where)
    if all(isinstance(c, int | float | str) for c in v):  # flat [x1, y1, x2, y2, ...]
        if len(v) % 2:
            raise DatasetError(f"{where}: points {v!r}: an odd number of coordinates")
        return _corners(zip(v[0::2], v[1::2], strict=True), where)
    return _corners(v, where)


def _segmentation(v: Any, where: str) -> list[float]:
    polys = v if isinstance(v, list) and v and all(isinstance(p, list) for p in v) else [v]
    flat = [c for p in polys for c in (p if isinstance(p, list) else [])]
    if not flat or len(flat) % 2:
        raise DatasetError(f"{where}: segmentation {v!r} is not COCO polygons")
    return _corners(zip(flat[0::2], flat[1::2], strict=True), where)


_BOX_READERS: tuple[tuple[tuple[str, ...], Callable[[Any, str], list[float]]], ...] = (
    (("bbox",), _xywh),
    (("box", "bndbox"), _xyxy),
    (("points", "polygon"), _points),
    (("segmentation",), _segmentation),
)
_CLASS_KEYS = ("category_name", "class", "label", "class_name", "object_class")


def _aihub_label(a: dict[str, Any], cats: dict[str, str] | None, where: str) -> str:
    for k in _CLASS_KEYS:
        v = _get(a, k)
        if isinstance(v, str) and v.strip():
            return v.strip()
        if isinstance(v, int | float) and not isinstance(v, bool):
            return str(v)
    cid = _get(a, "category_id")
    if cid is _MISSING or cid is None:
        raise DatasetError(f"{where}: no class: looked for {', '.join(_CLASS_KEYS)} and "
                           f"category_id; the annotation has keys {sorted(a)}")
    if cats is None:
        return str(cid)
    if str(cid) not in cats:
        raise DatasetError(f"{where}: category_id {cid!r} is not in the file's categories "
                           f"(ids {sorted(cats)})")
    return cats[str(cid)]


def _aihub_categories(doc: dict[str, Any], where: str) -> dict[str, str] | None:
    v = _get(doc, "categories")
    if v is _MISSING or v is None:
        return None
    if isinstance(v, dict):
        return {str(k): str(n) for k, n in v.items()}
    cats = {}
    for c in v if isinstance(v, list) else [v]:
        cid, name = (_get(c, "id"), _get(c, "name")) if isinstance(c, dict) else (None, None)
        if cid in (None, _MISSING) or not isinstance(name, str):
            raise DatasetError(f"{where}: category {c!r} needs an 'id' and a 'name'")
        cats[str(cid)] = name
    return cats


class _ImageIndex:
    """Every image under the root by lower-case name and stem, built on first need: the last
    place an AI-Hub label's photo is looked for (its 원천데이터 directory can sit anywhere)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.by_key: dict[str, list[Path]] | None = None

    def find(self, key: str) -> list[Path]:
        if self.by_key is None:
            self.by_key = {}
            for p in _images_under(self.root):
                for k in {p.name.lower(), p.stem.lower()}:
                    self.by_key.setdefault(k, []).append(p)
        return self.by_key.get(key.lower(), [])


def _aihub_image(json_path: Path, file_name: str | None, root: Path,
                 index: _ImageIndex) -> Path:
    d = json_path.parent
    dirs = [d]
    if d.absolute() != root.absolute():  # sibling directories, inside the data set only
        dirs += sorted(p for p in d.parent.iterdir() if p.is_dir() and p != d)
    if file_name:
        name = Path(file_name.replace("\\", "/")).name
        tried = [d / file_name] + [x / name for x in dirs]
    else:
        name = json_path.stem
        tried = [x / (name + s) for x in dirs for s in IMAGE_SUFFIXES]
    for p in tried:
        if p.is_file():
            return p
    hits = index.find(name)
    if len(hits) == 1:
        return hits[0]
    what = file_name or f"{json_path.stem}.*"
    if hits:
        raise DatasetError(f"{json_path}: image {what} is ambiguous: "
                           f"{', '.join(str(h) for h in hits)}")
    raise DatasetError(f"{json_path}: image {what} not found beside the JSON, in its sibling "
                       f"directories or anywhere under {root}")


def _read_aihub_file(json_path: Path, root: Path, index: _ImageIndex,
                     tally: _Tally) -> Sample:
    doc = _load_json(json_path)
    if isinstance(doc, list) and len(doc) == 1:
        doc = doc[0]
    if not isinstance(doc, dict):
        raise DatasetError(f"{json_path}: not an AI-Hub label file: a {type(doc).__name__}, "
                           "not an object")
    where = str(json_path)
    info = _get(doc, "images", "image", "image_info")
    anns = _get(doc, "annotations", "annotation", "objects", "annotation_info")
    if anns is _MISSING:
        raise DatasetError(f"{json_path}: not a form of AI-Hub label file this reader knows: "
                           "looked for annotations / annotation / objects / ANNOTATION_INFO "
                           f"(with images / image / IMAGE_INFO); the file has keys {sorted(doc)}")
    if anns is None:
        anns = []  # written as null by some exporters for a photo with nothing in it
    if isinstance(info, list):
        if len(info) != 1:
            raise DatasetError(f"{json_path}: 'images' lists {len(info)} images; a per-image "
                               "label file has one (a whole-set file: read it as coco)")
        info = info[0]
    if info is _MISSING:
        info = doc  # file name and size, if any, at the top level
    if not isinstance(info, dict):
        raise DatasetError(f"{json_path}: image info {info!r} is not an object")
    fn = _get(info, "file_name", "filename", "image_name")
    fn = fn if isinstance(fn, str) and fn.strip() else None
    path = _aihub_image(json_path, fn, root, index)
    w = _size(_default(_get(info, "width", "image_width")), where, "width")
    h = _size(_default(_get(info, "height", "image_height")), where, "height")
    if w is None or h is None:
        w, h = _image_size(path, where)
    cats = _aihub_categories(doc, where)
    boxes = []
    for k, a in enumerate(anns if isinstance(anns, list) else [anns]):
        aid = _get(a, "id") if isinstance(a, dict) else _MISSING
        awhere = f"{json_path}: annotation {aid if aid not in (_MISSING, None) else f'#{k}'}"
        if not isinstance(a, dict):
            raise DatasetError(f"{awhere}: not an object")
        label = _aihub_label(a, cats, awhere)
        for keys, reader in _BOX_READERS:
            v = _get(a, *keys)
            if v is not _MISSING and v is not None:
                coords = reader(v, awhere)
                break
        else:
            raise DatasetError(f"{awhere}: no box: looked for bbox, box, bndbox, points, "
                               f"polygon, segmentation; the annotation has keys {sorted(a)}")
        boxes.append(tally.box(label, coords, w, h, awhere))
    return Sample(path.absolute(), w, h, tuple(b for b in boxes if b),
                  _sequence(info) or group_of(path, root))


def _default(v: Any) -> Any:
    return None if v is _MISSING else v


def read_aihub(root: Path) -> list[Sample]:
    """A directory of AI-Hub per-image JSON label files (searched recursively): see the
    module docstring for the fields read."""
    root = Path(root)
    files = sorted(root.rglob("*.json")) if root.is_dir() else []
    if not files:
        raise DatasetError(f"{root}: no .json label files: not an AI-Hub set")
    index, tally = _ImageIndex(root), _Tally(str(root))
    out = [_read_aihub_file(f, root, index, tally) for f in files]
    tally.report()
    return _finish(out)


# --- any form ---------------------------------------------------------------------------------


def detect_format(path: Path) -> str:
    """The form of the data set at ``path`` (one of :data:`FORMATS`), from what is there."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".json":
        doc = _load_json(path)
        if _is_coco(doc):
            return "coco"
        keys = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
        raise DatasetError(f"{path}: a JSON file that is not COCO (needs 'images', "
                           f"'annotations' and 'categories'; it has {keys}); for AI-Hub "
                           "per-image labels give their directory")
    if path.is_dir():
        if (path / "Annotations").is_dir() and any((path / "Annotations").rglob("*.xml")):
            return "voc"
        # .txt label files, not just a labels/ directory: AI-Hub sets name theirs labels/ too
        if any(any(lbl.rglob("*.txt")) for _, lbl in _yolo_dirs(path)):
            return "yolo"
        if _coco_in_dir(path) is not None:
            return "coco"
        if any(path.rglob("*.json")):
            return "aihub"
    raise DatasetError(f"{path}: cannot tell the data set's form: looked for a COCO .json "
                       "file ('images' + 'annotations' + 'categories'), a directory with "
                       "Annotations/*.xml (VOC), with labels/*.txt (YOLO), or of per-image .json "
                       "label files (AI-Hub)")


def _coco_in_dir(path: Path) -> Path | None:
    """The one COCO file of a directory laid out as ``annotations.json`` + ``images/``: the
    only .json under it, at its top level (per-image label files are AI-Hub's)."""
    jsons = list(path.rglob("*.json"))
    if len(jsons) == 1 and jsons[0].parent == path:
        try:
            doc = _load_json(jsons[0])
        except DatasetError:
            return None
        if _is_coco(doc):
            return jsons[0]
    return None


def read(path: Path, fmt: str = "auto") -> list[Sample]:
    """A labelled photo set in any of :data:`FORMATS`; ``auto`` tells the form from what is
    at ``path`` (:func:`detect_format`)."""
    path = Path(path)
    if fmt not in ("auto", *FORMATS):
        raise DatasetError(f"{path}: unknown data set format {fmt!r}: one of auto, "
                           f"{', '.join(FORMATS)}")
    if not path.exists():
        raise DatasetError(f"{path}: no such file or directory")
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt == "coco":
        if path.is_dir():
            found = _coco_in_dir(path)
            if found is None:
                raise DatasetError(f"{path}: a directory, and not one holding a single COCO "
                                   ".json file: give the COCO file itself")
            path = found
        return read_coco(path)
    readers = {"yolo": read_yolo, "voc": read_voc, "aihub": read_aihub}
    return readers[fmt](path)


# --- class mapping ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassMap:
    """A data set's labels mapped onto our classes (:meth:`load` reads the TOML file)."""

    targets: dict[str, int]  # source label -> our class id
    ignored: frozenset[str]  # neither object nor background: training ignores the region
    dropped: frozenset[str]  # background: the box is removed, the region is a negative
    source: str = ""  # the mapping file, for messages

    @classmethod
    def load(cls, path: Path, classes: Sequence[str]) -> ClassMap:
        """Read ``[classes]`` ``"source label" = "our class" | "ignore" | "background"``."""
        path = Path(path)
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise DatasetError(f"{path}: not a readable TOML file: {e}") from None
        table = doc.get("classes")
        if not isinstance(table, dict) or not table:
            raise DatasetError(f"{path}: needs a [classes] table mapping each label of the "
                               "data set to one of our classes, \"ignore\" or \"background\"")
        ids = {c: i for i, c in enumerate(classes)}
        targets, ignored, dropped = {}, set(), set()
        for label, value in table.items():
            if value == IGNORE:
                ignored.add(label)
            elif value == BACKGROUND:
                dropped.add(label)
            elif isinstance(value, str) and value in ids:
                targets[label] = ids[value]
            else:
                raise DatasetError(
                    f"{path}: [classes] {json.dumps(label, ensure_ascii=False)} = "
                    f"{json.dumps(value, ensure_ascii=False, default=str)}: not one of our "
                    f"classes ({', '.join(classes)}) nor \"{IGNORE}\" / \"{BACKGROUND}\"")
        return cls(targets, frozenset(ignored), frozenset(dropped), str(path))

    def knows(self, label: str) -> bool:
        return label in self.targets or label in self.ignored or label in self.dropped

    def check(self, samples: Iterable[Sample]) -> None:
        """Refuse a set that uses labels this mapping does not mention, listing every one
        with its box count: a half-mapped set would train on silently missing objects."""
        unknown = Counter(b.label for s in samples for b in s.boxes if not self.knows(b.label))
        if unknown:
            listed = ", ".join(f"{json.dumps(k, ensure_ascii=False)} ({n} boxes)"
                               for k, n in sorted(unknown.items(), key=lambda kv: (-kv[1],
                                                                                   kv[0])))
            raise DatasetError(f"{self.source or 'the class mapping'}: the data set uses "
                               f"{len(unknown)} label(s) the mapping does not mention: "
                               f"{listed}; map each to one of our classes, \"{IGNORE}\" or "
                               f"\"{BACKGROUND}\"")

    def apply(self, sample: Sample) -> list[Target]:
        """The sample's boxes as (class id, x1, y1, x2, y2): ignored labels get id -1,
        background labels are left out."""
        out = []
        for b in sample.boxes:
            if b.label in self.targets:
                out.append((self.targets[b.label], b.x1, b.y1, b.x2, b.y2))
            elif b.label in self.ignored:
                out.append((-1, b.x1, b.y1, b.x2, b.y2))
            elif b.label not in self.dropped:
                raise DatasetError(f"{sample.image}: label {b.label!r} is not in "
                                   f"{self.source or 'the class mapping'} (check() lists all)")
        return out


def map_samples(samples: Sequence[Sample], cmap: ClassMap) -> list[tuple[Sample, list[Target]]]:
    """Every sample with its mapped boxes, after :meth:`ClassMap.check` of the whole set."""
    cmap.check(samples)
    return [(s, cmap.apply(s)) for s in samples]


# --- split ------------------------------------------------------------------------------------

PARTS = ("train", "val", "held_out")


def split(samples: Sequence[Sample], seed: int, val: float = 0.1,
          held_out: float = 0.1) -> dict[str, list[Sample]]:
    """Whole recordings (``Sample.group``) into ``train``, ``val`` and ``held_out``.

    Groups are taken in the order of sha256(f"{seed}:{group}"), so the result depends on the
    seed and the group names alone, not on the order the samples came in. Each group goes to
    the first of held_out, val that is still short of its share of images and that it brings
    closer to that share (a part with no group yet always takes one), else to train; a part
    left empty then takes the smallest group of the part with the most. ``val=0`` or
    ``held_out=0`` holds none out for that part. Within a part, samples are sorted by group
    and image path."""
    for name, f in (("val", val), ("held_out", held_out)):
        if not (math.isfinite(f) and 0 <= f < 1):
            raise DatasetError(f"split: {name}={f} is not a fraction in [0, 1)")
    if val + held_out >= 1:
        raise DatasetError(f"split: val={val} + held_out={held_out} leave nothing to train on")
    groups: dict[str, list[Sample]] = {}
    for s in samples:
        groups.setdefault(s.group, []).append(s)
    wanted = [p for p, f in (("held_out", held_out), ("val", val)) if f > 0]
    if len(groups) < 1 + len(wanted):
        names = ", ".join(sorted(groups)[:5]) + (", ..." if len(groups) > 5 else "")
        raise DatasetError(
            f"split: the set has {len(groups)} recording(s) ({names or 'no photos'}); it "
            f"needs at least {1 + len(wanted)} recordings to hold some out for "
            f"{' and '.join(wanted) or 'training'}: a recording's frames never sit in two "
            "parts. Add recordings, or hold none out (val=0, held_out=0)")
    order = sorted(groups, key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
    rank = {g: i for i, g in enumerate(order)}
    total = sum(len(v) for v in groups.values())
    share = {"held_out": held_out * total, "val": val * total}
    parts: dict[str, list[str]] = {p: [] for p in PARTS}
    count = dict.fromkeys(PARTS, 0)
    for g in order:
        n, dest = len(groups[g]), "train"
        for p in wanted:
            short = share[p] - count[p]
            if short > 0 and (count[p] == 0 or n - short <= short):
                dest = p
                break
        parts[dest].append(g)
        count[dest] += n
    for p in ("train", *wanted):
        if not parts[p]:  # possible only with large fractions; the pigeonhole keeps a donor
            donor = max(PARTS, key=lambda q: len(parts[q]))
            g = min(parts[donor], key=lambda g: (len(groups[g]), rank[g]))
            parts[donor].remove(g)
            parts[p].append(g)
    return {p: sorted((s for g in parts[p] for s in groups[g]),
                      key=lambda s: (s.group, str(s.image))) for p in PARTS}
