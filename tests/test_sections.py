"""Generated sections (models/sections.py): what every measuring script's --write and
--check do with a document."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
import sections


def test_write_then_check_and_a_hand_edit_caught(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    doc = tmp_path / "README.md"
    doc.write_text("# Title\n\nprose\n")
    text = "<!-- t:begin -->\n| a | 0.50 |\n<!-- t:end -->"
    assert sections.publish(doc, "t", text, write=False, check=True, fix="x --write") == 1
    assert "run x --write" in capsys.readouterr().err
    assert sections.publish(doc, "t", text, write=True, check=False, fix="x") == 0
    assert doc.read_text() == "# Title\n\nprose\n\n" + text + "\n"
    assert sections.publish(doc, "t", text, write=False, check=True, fix="x") == 0
    doc.write_text(doc.read_text().replace("0.50", "0.90"))  # a figure edited by hand
    assert sections.publish(doc, "t", text, write=False, check=True, fix="x") == 1
    # a rewrite replaces only its own section
    doc.write_text("a\n" + text + "\nb\n<!-- u:begin -->keep<!-- u:end -->\n")
    new = text.replace("0.50", "0.70")
    sections.publish(doc, "t", new, write=True, check=False, fix="x")
    assert doc.read_text() == "a\n" + new + "\nb\n<!-- u:begin -->keep<!-- u:end -->\n"
