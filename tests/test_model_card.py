"""The model card's generated drive figures: ``models/train/drives.py`` tells a hand-altered or
stale section from the one it writes, and a retraining's new card keeps every generated
section. Made-up scores, no drives run (the evaluation drives' real run is
tests/test_replay.py::test_generated_drives_meet_the_evaluation_targets)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from agent.config import EventsConfig
from agent.evaluate import Scores

ROOT = Path(__file__).resolve().parent.parent
SEEDS = list(range(21, 29))


def load_train_script(name: str) -> ModuleType:
    """models/train/NAME.py, a script beside the training code, as a module."""
    key = f"patrol_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            key, ROOT / "models" / "train" / f"{name}.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def load_drives() -> ModuleType:
    """models/train/drives.py as a module."""
    return load_train_script("drives")


drives = load_drives()
DEFAULT = EventsConfig().confirm_score


def scores(events: int, false: int, err: float | None = 3.3, objects: int = 57) -> Scores:
    belong = events - false
    return Scores(objects=objects, events=events, matched=objects, recall=1.0,
                  precision=belong / events, events_per_object=belong / objects,
                  position_error_m_p50=err, position_error_m_p95=9.0, false_positives=false,
                  missed=[])


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "made-up.tflite"
    path.write_bytes(b"not a real model, only hashed")
    return path


@pytest.fixture
def results() -> dict[float, Scores]:
    return {0.8: scores(71, 14), DEFAULT: scores(66, 9)}


def card_with(section: str) -> str:
    return f"# a card\n\n## Limitations\n- prose\n\n{section}\n\n## Reproduce\nsteps\n"


def test_the_section_it_writes_passes_the_check(model: Path,
                                                results: dict[float, Scores]) -> None:
    section = drives.render(results, model, SEEDS)
    assert drives.differences(card_with(section), results, model, SEEDS) == []
    row = drives.parse(section).rows[DEFAULT]
    assert row == [f"{DEFAULT:g} (default)", "1.00", "0.86", "1.00", "3.3 m", "66", "9"]
    assert drives.sha256_prefix(model) in section and "--seeds 21-28" in section


def test_a_hand_altered_figure_fails_the_check_naming_it(
        model: Path, results: dict[float, Scores], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    section = drives.render(results, model, SEEDS)
    altered = section.replace("| 1.00 | 0.86 | 1.00 |", "| 1.00 | 0.90 | 1.00 |")
    assert altered != section
    problems = drives.differences(card_with(altered), results, model, SEEDS)
    assert problems == [f"confirm_score {DEFAULT:g}, precision: the card says 0.90, the drives "
                        "give 0.86 (more than 0.03 apart)"]

    # the command line: --check exits 1 with that message and the command that fixes it
    card = tmp_path / "MODEL_CARD.md"
    card.write_text(card_with(altered))
    assert drives.doc_sections.card_for(model) == card  # the card beside the model
    monkeypatch.setattr(drives, "measure", lambda *a, **k: results)
    assert drives.main([str(model), "--check"]) == 1  # seeds and scores as the card states
    err = capsys.readouterr().err
    assert "the drives section is not what made-up.tflite gives" in err
    assert problems[0] in err
    assert "--seeds 21-28 --confirm-score 0.8 0.85 --duration 60 --write" in err
    card.write_text(card_with(section))
    assert drives.main([str(model), "--check"]) == 0


def test_a_candidate_s_figures_go_into_its_own_card_never_the_shipped_one(
        results: dict[float, Scores], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model trained into a folder of its own (train_default.py --out DIR, or a candidate
    kept in models/candidates/NAME/) has its card beside it; drives.py --write on it fills
    that card and leaves the shipped model's alone."""
    shipped = drives.CARD.read_bytes()
    candidate = tmp_path / "candidates" / "run3" / "civil-complaint.tflite"
    candidate.parent.mkdir(parents=True)
    candidate.write_bytes(b"a candidate's weights")
    (candidate.parent / "MODEL_CARD.md").write_text(card_with("<!-- drives:begin -->\n"
                                                              "<!-- drives:end -->"))
    monkeypatch.setattr(drives, "measure", lambda *a, **k: results)
    assert drives.main([str(candidate), "--seeds", "21-28", "--write"]) == 0
    card = (candidate.parent / "MODEL_CARD.md").read_text()
    assert drives.sha256_prefix(candidate) in card and "| 0.85 (default) | 1.00 | 0.86 |" in card
    assert drives.main([str(candidate), "--check"]) == 0
    assert drives.CARD.read_bytes() == shipped


def test_the_kept_candidate_s_real_photo_figures_are_its_own() -> None:
    """models/candidates/*/: each kept candidate's card holds its own model's false alarms on
    real photos, checked the way the shipped card's are (real_photos.py --check, the card
    beside the model)."""
    candidates = sorted((ROOT / "models" / "candidates").glob("*/civil-complaint.tflite"))
    assert candidates, "no kept candidate"
    for model in candidates:
        r = subprocess.run([sys.executable, str(ROOT / "models" / "train" / "real_photos.py"),
                            str(model), "--check"],
                           capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert r.returncode == 0, r.stderr[-1500:]


def test_a_stale_card_names_what_changed(model: Path, results: dict[float, Scores],
                                         tmp_path: Path) -> None:
    section = drives.render(results, model, SEEDS)
    retrained = tmp_path / "retrained.tflite"
    retrained.write_bytes(b"other weights")
    new = {0.8: scores(70, 12), DEFAULT: scores(64, 8, err=4.1)}
    problems = drives.differences(card_with(section), new, retrained, SEEDS)
    assert "the card states model sha256 " + drives.sha256_prefix(model) + ", this run " + \
        drives.sha256_prefix(retrained) in problems
    assert f"confirm_score {DEFAULT:g}, median position error: the card says 3.3 m, the " \
        "drives give 4.1 m (more than 0.5 apart)" in problems
    assert drives.differences("# a card without it\n", new, model, SEEDS) == [
        "the card has no drives section (<!-- drives:begin --> ... <!-- drives:end -->)"]
    # hand-edited words, same figures: still not the section drives.py writes
    reworded = section.replace("do not edit by hand", "edit freely")
    assert "not what drives.py writes" in drives.differences(
        card_with(reworded), results, model, SEEDS)[0]


def test_a_run_at_the_default_only_judges_its_own_row(model: Path,
                                                      results: dict[float, Scores]) -> None:
    card = card_with(drives.render(results, model, SEEDS))
    assert drives.differences(card, {DEFAULT: results[DEFAULT]}, model, SEEDS,
                              partial=True) == []
    assert drives.differences(card, {DEFAULT: scores(70, 13)}, model, SEEDS, partial=True) == [
        f"confirm_score {DEFAULT:g}, precision: the card says 0.86, the drives give 0.81 (more "
        "than 0.03 apart)",
        f"confirm_score {DEFAULT:g}, findings: the card says 66, the drives give 70 (more than 1 "
        "apart)",
        f"confirm_score {DEFAULT:g}, false findings: the card says 9, the drives give 13 (more "
        "than 1 apart)"]
    # a changed default: the card's row for it is not marked as the default
    only_08 = card_with(drives.render({0.8: results[0.8]}, model, SEEDS))
    assert drives.differences(only_08, {DEFAULT: results[DEFAULT]}, model, SEEDS,
                              partial=True) == [f"the card has no row for confirm_score "
                                                f"{DEFAULT:g}"]


def test_one_finding_more_or_a_few_decimetres_is_within_the_tolerance(
        model: Path, results: dict[float, Scores]) -> None:
    """A replay nearly always repeats to the bit, not always (drives.py's docstring): a run
    that differs by about one finding's worth still states the card's figures."""
    card = card_with(drives.render(results, model, SEEDS))
    near = {0.8: scores(72, 15, err=3.6), DEFAULT: scores(67, 10, err=3.0)}
    assert drives.render(near, model, SEEDS) != drives.render(results, model, SEEDS)
    assert drives.differences(card, near, model, SEEDS) == []
    assert drives.differences(card, {DEFAULT: near[DEFAULT]}, model, SEEDS, partial=True) == []
    # but not other words around the figures
    assert "not what drives.py writes" in drives.differences(
        card.replace("do not edit by hand", "edit freely"), near, model, SEEDS)[0]


def test_write_replaces_only_its_section(model: Path, results: dict[float, Scores]) -> None:
    old = card_with(drives.render({DEFAULT: scores(60, 3)}, model, SEEDS))
    new = drives.put_section(old, drives.render(results, model, SEEDS))
    assert new.startswith("# a card\n\n## Limitations\n- prose\n\n<!-- drives:begin -->")
    assert new.endswith("<!-- drives:end -->\n\n## Reproduce\nsteps\n")
    tuning = drives.render(results, model, [101, 102], name="drives-tuning")
    both = drives.put_section(new, tuning, "drives-tuning")
    assert both.index("<!-- drives:end -->") < both.index("<!-- drives-tuning:begin -->")
    assert drives.differences(both, results, model, [101, 102], name="drives-tuning") == []
    assert drives.differences(both, results, model, SEEDS) == []


def test_seeds_read_and_written_as_ranges() -> None:
    assert drives.parse_seeds("21-28") == SEEDS
    assert drives.parse_seeds("21,23,25-27") == [21, 23, 25, 26, 27]
    assert drives.seeds_text([27, 21, 23, 25, 26]) == "21,23,25-27"
    assert drives.seeds_text(range(101, 113)) == "101-112"


def test_a_new_card_keeps_every_generated_section_of_the_old() -> None:
    """What train_default.py's write_model_card does with the card it replaces."""
    old = ("# old\n\n## False alarms on real photos\n\n<!-- real-photos:begin -->\nphotos "
           "table\n<!-- real-photos:end -->\n\n## Limitations\n- old prose\n\n### Whole agent"
           "\n\n<!-- drives:begin -->\ndrives table\n<!-- drives:end -->\n\n## Extra\n\n"
           "<!-- extra:begin -->\nextra figures\n<!-- extra:end -->\n\n## Speed\nold speed\n")
    new = ("# new\n\n## False alarms on real photos\n\n<!-- real-photos:begin -->\nnot yet\n"
           "<!-- real-photos:end -->\n\n## Speed\nnew speed\n\n## Limitations\n- new prose\n\n"
           "### Whole agent\n\n<!-- drives:begin -->\nnot yet\n<!-- drives:end -->\n\n"
           "## Reproduce\nsteps\n")
    text, carried = drives.carry_sections(old, new)
    assert carried == ["real-photos", "drives", "extra"]
    assert drives.sections(text) == drives.sections(old)
    assert text == new.replace("not yet\n<!-- real-photos", "photos table\n<!-- real-photos") \
        .replace("not yet\n<!-- drives", "drives table\n<!-- drives") \
        + "\n## Extra\n\n<!-- extra:begin -->\nextra figures\n<!-- extra:end -->\n"
    # a block under a heading the new card has goes at the end of that part of it
    old = "# old\n\n## Speed\nold speed\n\n<!-- extra:begin -->\nx\n<!-- extra:end -->\n"
    text, _ = drives.carry_sections(old, new)
    assert "## Speed\nnew speed\n\n<!-- extra:begin -->\nx\n<!-- extra:end -->\n\n" \
        "## Limitations" in text
