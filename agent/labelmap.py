"""Label maps as published detectors ship them, read into "class index → name".

A detector outputs class *indices*; a label file names them. Exporters write that file in
several forms, and reading one the wrong way shifts every name by one without any error,
so the form is recognised and the rules are explicit:

- **One name per line** (TFLite examples, Ultralytics ``names``): line *i* names index *i*.
  A first line that is a background entry (``???``, ``background``, ``__background__``;
  the TF Object Detection API's ``labelmap.txt``) names no output index and is dropped.
- **Lines with ids**: ``1 person``, ``1: person``, ``1<TAB>person``, ``1,person``, in any
  order, with gaps (COCO's 1..90). Ids that start at 0 are indices. Ids that start at 1
  are the TF Object Detection API's, whose exported post-processing op counts from the
  first real class (its ``label_id_offset`` is 1): index = id - 1. A background entry
  (``0 background``) is dropped first. ``detector.label_offset`` says otherwise where a
  model differs; for a plain file it drops that many first lines.
- **``.pbtxt``** ``item { id: 1 name: "/m/01g317" display_name: "person" }``: the same id
  rule; ``display_name`` where there is one, else ``name``.

Gaps stay gaps: an index no line names is reported as ``class_N``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

BACKGROUND = {"???", "background", "__background__", "bg"}
_ID_LINE = re.compile(r"^\s*(\d+)\s*(?:[:,\t]|\s)\s*(.+?)\s*$")
_PBTXT_ITEM = re.compile(r"item\s*\{(.*?)\}", re.S)
_PBTXT_FIELD = re.compile(r"(\w+)\s*:\s*(?:\"((?:[^\"\\]|\\.)*)\"|'([^']*)'|(-?\d+))")


class LabelMapError(Exception):
    """The label file cannot be read as a label map; the message names the line."""


@dataclass(frozen=True)
class LabelMap:
    """Names by output index (None: a gap), and how they were read."""

    names: tuple[str | None, ...]
    form: str  # "lines", "ids" or "pbtxt"
    dropped_background: bool = False
    offset: int = 0  # subtracted from the file's ids

    def name(self, index: int) -> str:
        if 0 <= index < len(self.names) and self.names[index] is not None:
            return str(self.names[index])
        return f"class_{index}"

    def as_list(self) -> list[str]:
        return [self.name(i) for i in range(len(self.names))]

    def describe(self) -> str:
        how = {"lines": "one name per line", "ids": "lines with ids", "pbtxt": ".pbtxt items"}
        parts = [how[self.form]]
        if self.dropped_background:
            parts.append("a background entry dropped")
        if self.offset:
            parts.append(f"ids from {self.offset} (index = id - {self.offset})")
        gaps = sum(1 for n in self.names if n is None)
        if gaps:
            parts.append(f"{gaps} unnamed ids")
        return ", ".join(parts)


def parse_label_map(text: str, source: str = "labels", offset: int | None = None) -> LabelMap:
    """Read ``text`` in whichever form it is (see the module doc)."""
    if _PBTXT_ITEM.search(text):
        entries = _pbtxt(text, source)
        return _from_ids(entries, "pbtxt", source, offset)
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        raise LabelMapError(f"{source} is empty")
    with_ids = [_ID_LINE.match(ln) for ln in lines]
    if all(with_ids):
        entries = [(int(m.group(1)), m.group(2).strip().strip("'\"")) for m in with_ids if m]
        return _from_ids(entries, "ids", source, offset)
    if any(with_ids) and sum(1 for m in with_ids if m) > len(lines) // 2:
        bad = next(i for i, m in enumerate(with_ids) if not m)
        raise LabelMapError(f"{source}: line {bad + 1} ({lines[bad][:40]!r}) has no id while "
                            "most lines have one")
    dropped = lines[0].lower() in BACKGROUND
    names = lines[1:] if dropped else lines
    if offset:
        names = names[offset:]
    if not names:
        raise LabelMapError(f"{source} names only a background class")
    return LabelMap(tuple(names), "lines", dropped, 0)


def _pbtxt(text: str, source: str) -> list[tuple[int, str]]:
    out = []
    for n, item in enumerate(_PBTXT_ITEM.findall(text), 1):
        fields: dict[str, str] = {}
        for key, dq, sq, num in _PBTXT_FIELD.findall(item):
            fields.setdefault(key, dq or sq or num)
        if "id" not in fields or not fields["id"].lstrip("-").isdigit():
            raise LabelMapError(f"{source}: item {n} has no numeric id")
        name = fields.get("display_name") or fields.get("name")
        if not name:
            raise LabelMapError(f"{source}: item {n} (id {fields['id']}) has no name")
        out.append((int(fields["id"]), name))
    return out


def _from_ids(entries: list[tuple[int, str]], form: str, source: str,
              offset: int | None) -> LabelMap:
    ids = [i for i, _ in entries]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise LabelMapError(f"{source}: ids {dup} are given more than once")
    real = [(i, n) for i, n in entries if n.lower() not in BACKGROUND]
    dropped = len(real) != len(entries)
    if not real:
        raise LabelMapError(f"{source} names only a background class")
    if offset is None:
        # A background entry at id 0 (TF's "0 background") names no output: the real ids
        # decide, and TF's start at 1.
        offset = 0 if min(i for i, _ in real) == 0 else 1
    indices = [i - offset for i, _ in real]
    if min(indices) < 0:
        raise LabelMapError(f"{source}: id {min(i for i, _ in real)} is below the label "
                            f"offset {offset}")
    names: list[str | None] = [None] * (max(indices) + 1)
    for (_, name), index in zip(real, indices, strict=True):
        names[index] = name
    return LabelMap(tuple(names), form, dropped, offset)


def read_label_map(path: Path, offset: int | None = None) -> LabelMap:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise LabelMapError(f"labels file {path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError:
        raise LabelMapError(f"labels file {path} is not UTF-8 text") from None
    return parse_label_map(text, f"labels file {path}", offset)
