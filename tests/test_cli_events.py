"""`patrol-agent events list|show|export|import` over a real outbox."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest

from agent import __version__
from agent.cli import main
from agent.store import Store
from tests.conftest import agent_cmd, make_event, make_jpeg


@pytest.fixture
def outbox(tmp_path: Path) -> tuple[Path, list[str]]:
    db = tmp_path / "o.db"
    evs = [make_event(i, label="banner" if i % 2 else "garbage") for i in range(5)]
    # every event has a crop but the fourth, as if stored before crops existed
    evs = [e if i == 3 else e.replace(crop_jpeg=make_jpeg(30 + i, size=32))
           for i, e in enumerate(evs)]
    with Store(db) as s:
        s.add_many(evs)
        s.mark_delivered([evs[0].id])
    return db, [e.id for e in evs]


def test_version() -> None:
    r = subprocess.run(agent_cmd("--version"), capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == f"patrol-agent {__version__}"


def test_list_shows_each_event_and_totals(outbox: tuple[Path, list[str]],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    db, ids = outbox
    assert main(["events", "list", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    for i in ids:
        assert i in out
    assert "4 pending, 1 delivered" in out
    assert main(["events", "list", "--db", str(db), "--label", "banner"]) == 0
    out = capsys.readouterr().out
    assert ids[1] in out and ids[0] not in out


def test_show_by_prefix_writes_the_image(outbox: tuple[Path, list[str]], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    db, ids = outbox
    img = tmp_path / "e.jpg"
    assert main(["events", "show", ids[2], "--db", str(db), "--image", str(img)]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["id"] == ids[2] and rec["state"] == "pending"
    assert img.read_bytes()[:2] == b"\xff\xd8"
    assert main(["events", "show", "nope", "--db", str(db)]) == 1
    assert "no event with id 'nope'" in capsys.readouterr().err


def test_show_says_why_a_finding_has_no_picture(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A finding committed before its picture is made, and one released without it: a
    technician asking for the picture is told why there is none, not given an empty file."""
    db, img = tmp_path / "o.db", tmp_path / "e.jpg"
    making, released = make_event(1).replace(image_jpeg=b""), make_event(2).replace(image_jpeg=b"")
    with Store(db) as s:
        s.add_many([released], pictures_to_follow={released.id})
        s.release_pictures("the agent stopped before its picture was made")
        s.add_many([making], pictures_to_follow={making.id})
    assert main(["events", "show", making.id, "--db", str(db), "--image", str(img)]) == 1
    assert "no picture yet: the privacy step is still making it" in capsys.readouterr().err
    assert main(["events", "show", released.id, "--db", str(db), "--image", str(img)]) == 1
    assert "no picture: the agent stopped before its picture was made" in capsys.readouterr().err
    assert not img.exists()


def test_show_names_and_writes_the_crop(outbox: tuple[Path, list[str]], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    db, ids = outbox
    crop = tmp_path / "c.jpg"
    assert main(["events", "show", ids[2], "--db", str(db), "--crop", str(crop)]) == 0
    rec = json.loads(capsys.readouterr().out)
    with Store(db) as s:
        want = s.get(ids[2])
    assert want is not None and crop.read_bytes() == want.event.crop_jpeg
    assert rec["crop_bytes"] == len(crop.read_bytes()) and rec["crop_sha256"] == want.crop_sha256
    # an event without a crop: shown, but no file, and the reason
    assert main(["events", "show", ids[3], "--db", str(db), "--crop", str(tmp_path / "n.jpg")]
                ) == 1
    cap = capsys.readouterr()
    assert json.loads(cap.out)["crop_bytes"] is None and "has no crop" in cap.err
    assert not (tmp_path / "n.jpg").exists()


def test_export_geojson_and_csv(outbox: tuple[Path, list[str]], tmp_path: Path) -> None:
    db, ids = outbox
    gj = tmp_path / "f.geojson"
    assert main(["events", "export", "--db", str(db), "--format", "geojson",
                 "--out", str(gj)]) == 0
    fc = json.loads(gj.read_text())
    assert [f["properties"]["id"] for f in fc["features"]] == ids
    lon, lat = fc["features"][0]["geometry"]["coordinates"]
    assert (lat, lon) == pytest.approx((37.6584, 126.8320))
    out = tmp_path / "f.csv"
    assert main(["events", "export", "--db", str(db), "--format", "csv", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["id"] for r in rows] == ids and rows[0]["state"] == "delivered"


def test_export_import_carries_findings_to_another_store(outbox: tuple[Path, list[str]],
                                                         tmp_path: Path) -> None:
    db, ids = outbox
    dump = tmp_path / "dump.jsonl"
    assert main(["events", "export", "--db", str(db), "--state", "pending", "--with-images",
                 "--out", str(dump)]) == 0
    other = tmp_path / "laptop.db"
    assert main(["events", "import", str(dump), "--db", str(other)]) == 0
    assert main(["events", "import", str(dump), "--db", str(other)]) == 0  # idempotent
    with Store(other) as s, Store(db) as orig:
        assert [e.event.id for e in s.iter_events()] == ids[1:]
        for e in s.iter_events():
            o = orig.get(e.event.id)
            assert o is not None and e.event.image_jpeg == o.event.image_jpeg
            assert e.event.crop_jpeg == o.event.crop_jpeg and e.crop_sha256 == o.crop_sha256
        assert s.get(ids[3]).event.crop_jpeg is None  # type: ignore[union-attr]


def test_an_export_from_before_crops_still_imports(outbox: tuple[Path, list[str]],
                                                   tmp_path: Path) -> None:
    db, ids = outbox
    dump = tmp_path / "dump.jsonl"
    assert main(["events", "export", "--db", str(db), "--with-images", "--out", str(dump)]) == 0
    old = []
    for line in dump.read_text().splitlines():  # the records an older agent wrote
        rec = json.loads(line)
        for k in ("crop_b64", "crop_bytes", "crop_sha256"):
            rec.pop(k, None)
        old.append(json.dumps(rec))
    dump.write_text("\n".join(old) + "\n")
    other = tmp_path / "laptop.db"
    assert main(["events", "import", str(dump), "--db", str(other)]) == 0
    with Store(other) as s:
        got = list(s.iter_events())
    assert [g.event.id for g in got] == ids
    assert all(g.event.crop_jpeg is None and g.crop_sha256 is None for g in got)


def test_import_skips_bad_lines_and_says_which(outbox: tuple[Path, list[str]], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    db, _ = outbox
    dump = tmp_path / "dump.jsonl"
    main(["events", "export", "--db", str(db), "--with-images", "--out", str(dump)])
    lines = dump.read_text().splitlines()
    lines.insert(1, '{"id": "x", "label": "garbage"}')
    lines.insert(2, "not json")
    dump.write_text("\n".join(lines) + "\n")
    other = tmp_path / "other.db"
    assert main(["events", "import", str(dump), "--db", str(other)]) == 1
    err = capsys.readouterr().err
    assert "dump.jsonl:2: skipped" in err and "dump.jsonl:3: skipped" in err
    assert "imported 5 events" in err


def test_missing_store_is_a_clear_error(tmp_path: Path) -> None:
    r = subprocess.run(agent_cmd("events", "list", "--db", str(tmp_path / "none.db")),
                       capture_output=True, text=True)
    assert r.returncode == 1 and "no store at" in r.stderr and "Traceback" not in r.stderr


def test_importing_a_file_that_is_not_text_is_one_line_and_changes_nothing(
        tmp_path: Path) -> None:
    """A technician picks the wrong file (the outbox itself, a picture): one line, exit 2."""
    blob = tmp_path / "outbox.db"
    blob.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 8)
    other = tmp_path / "other.db"
    r = subprocess.run(agent_cmd("events", "import", str(blob), "--db", str(other)),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "is not a JSON Lines export" in r.stderr and "nothing imported" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not other.exists()
