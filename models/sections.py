"""Generated sections of the project's documents: text between ``<!-- NAME:begin -->`` and
``<!-- NAME:end -->`` that a script measures and writes, and that a test holds current.

    put(doc, name, text, missing)   the document with the section replaced (or added)
    publish(path, name, text, ...)  what each measuring script's --write / --check does
    under_heading(doc, heading, text)  where a new section goes: its heading, before Reproduce
    card_for(model)                 the model card a model's figures go into: the one beside it

Every figure in a model card or a README table comes from code; a hand-edited figure goes
stale. The measuring scripts (models/train/real_photos.py, drives.py, placement.py,
models/privacy/measure.py, models/privacy/plates.py) share this instead of each keeping a copy.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def pattern(name: str) -> re.Pattern[str]:
    begin, end = markers(name)
    return re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)


def current(doc: str, name: str) -> str | None:
    """The section as the document has it, markers included, or None."""
    m = pattern(name).search(doc)
    return m.group(0) if m else None


def put(doc: str, name: str, text: str, missing: Callable[[str, str], str]) -> str:
    """``doc`` with ``text`` (markers included) as its ``name`` section; where it has none
    yet, ``missing(doc, text)`` says where it goes."""
    if current(doc, name) is not None:
        return pattern(name).sub(lambda _m: text, doc, count=1)
    return missing(doc, text)


def at_end(doc: str, text: str) -> str:
    return doc.rstrip("\n") + "\n\n" + text + "\n"


def under_heading(doc: str, heading: str, text: str, before: str = "## Reproduce") -> str:
    """``doc`` with ``text`` under a new ``heading`` just before the ``before`` heading
    (at its end if it has none): where a card without a section gets it."""
    if f"\n{before}" in doc:
        return doc.replace(f"\n{before}", f"\n{heading}\n\n{text}\n\n{before}", 1)
    return doc.rstrip("\n") + f"\n\n{heading}\n\n{text}\n"


def card_for(model: Path) -> Path:
    """A model's card is the MODEL_CARD.md beside it: models/MODEL_CARD.md for the shipped
    model, a candidate's (models/candidates/NAME/) or a fresh training run's its own."""
    return model.resolve().parent / "MODEL_CARD.md"


def publish(path: Path, name: str, text: str, *, write: bool, check: bool, fix: str,
            missing: Callable[[str, str], str] = at_end) -> int:
    """``--check``: exit status 1 (and say how to fix it) if ``path``'s section is not
    ``text``; ``--write``: put it there. Either way the section is printed (to stdout, or to
    stderr with a failed check). Returns the exit status."""
    doc = path.read_text(encoding="utf-8") if path.exists() else ""
    if check:
        if current(doc, name) != text:
            print(f"{path}: the {name} section is not what the code measures now; run {fix}",
                  file=sys.stderr)
            print(text, file=sys.stderr)
            return 1
        return 0
    if write:
        path.write_text(put(doc, name, text, missing), encoding="utf-8")
    print(text)
    return 0
