"""The docs say what the code does: every command is in the README, with help; the
figures docs/run.md states are the code's."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from agent.cli import build_parser
from agent.pipeline import STOP_BUDGET_S

ROOT = Path(__file__).resolve().parent.parent


def _subcommands(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            return dict(a.choices)
    return {}


def test_every_command_is_in_the_readme_with_help() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Commands", 1)[1].split("```", 2)[1]
    for name, sub in _subcommands(build_parser()).items():
        actions = _subcommands(sub)
        for full in ([f"{name} {a}" for a in actions] if actions else [name]):
            assert re.search(rf"^patrol-agent {full}\b", block, re.M), f"{full} not in README"
        assert sub.format_help().strip()


def test_every_office_command_is_in_the_readme_and_docs_with_help() -> None:
    from office.cli import build_parser as office_parser
    readme = (ROOT / "README.md").read_text()
    block = readme.split("The office (", 1)[1].split("```", 2)[1]
    office_doc = (ROOT / "docs" / "office.md").read_text()
    for name, sub in _subcommands(office_parser()).items():
        assert re.search(rf"^patrol-office {name}\b", block, re.M), f"{name} not in README"
        assert f"patrol-office {name}" in office_doc, f"{name} not in docs/office.md"
        assert sub.format_help().strip()


def test_the_stop_budget_in_docs_is_the_codes() -> None:
    text = (ROOT / "docs" / "run.md").read_text()
    m = re.search(r"at most \*\*(\d+) s\*\* \(`pipeline\.STOP_BUDGET_S`\)", text)
    assert m and int(m.group(1)) == round(STOP_BUDGET_S), (m and m.group(1), STOP_BUDGET_S)
