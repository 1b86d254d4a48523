"""models/train/datasets.py: the same labelled photos written in COCO, YOLO, VOC and AI-Hub
form read back as the same samples; the class mapping; the split by recording; bad input
refused with the file named. Small real image files, no TensorFlow."""

from __future__ import annotations

import json
import logging
import random
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "models" / "train"))
import datasets as ds  # noqa: E402  (models/train/datasets.py)

OUR_CLASSES = ["garbage", "banner", "construction", "bin", "sign"]
LABELS = ["illegal_dumping", "placard", "construction_site", "trash_bin", "traffic_sign",
          "person", "car"]

# (file name, width, height, boxes as (label, x1, y1, x2, y2) in continuous pixel corners)
SCENE: list[tuple[str, int, int, list[tuple[str, int, int, int, int]]]] = [
    ("drive7_000123.jpg", 64, 48, [("construction_site", 4, 6, 30, 40),
                                   ("traffic_sign", 40, 2, 60, 20)]),
    ("drive7_000124.jpg", 64, 48, [("placard", 10, 10, 50, 30), ("trash_bin", 2, 30, 12, 46)]),
    ("alley_0001.jpg", 80, 60, [("illegal_dumping", 20, 20, 70, 55)]),
    ("alley_0002.png", 64, 48, [("person", 5, 5, 15, 40), ("car", 30, 20, 63, 47)]),
    ("market.jpg", 64, 48, [("illegal_dumping", 0, 0, 64, 48)]),
    ("quiet_0005.jpg", 64, 48, []),
]
GROUPS = {"drive7_000123.jpg": "drive7", "drive7_000124.jpg": "drive7",
          "alley_0001.jpg": "alley", "alley_0002.png": "alley", "market.jpg": "market",
          "quiet_0005.jpg": "quiet"}

MAPPING = """\
# source label = our class, or "ignore" / "background"
[classes]
"illegal_dumping" = "garbage"
"placard" = "banner"
"construction_site" = "construction"
"trash_bin" = "bin"
"traffic_sign" = "sign"
"person" = "background"
"car" = "ignore"
"""


def _photo(path: Path, width: int, height: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)


def _write_json(path: Path, doc: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")


def make_coco(root: Path, video_ids: bool = False) -> Path:
    images, anns = [], []
    for i, (name, w, h, boxes) in enumerate(SCENE, 1):
        _photo(root / "images" / name, w, h, i)
        entry = {"id": i, "file_name": name, "width": w, "height": h}
        if video_ids:
            entry["video_id"] = 100 + (i - 1) // 2
        images.append(entry)
        for label, x1, y1, x2, y2 in boxes:
            anns.append({"id": len(anns) + 1, "image_id": i,
                         "category_id": LABELS.index(label) + 1,
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": 0})
    anns[-1]["iscrowd"] = 1  # kept as a box like any other
    cats = [{"id": k + 1, "name": n} for k, n in enumerate(LABELS)]
    _write_json(root / "annotations.json",
                {"images": images, "annotations": anns, "categories": cats})
    return root / "annotations.json"


def make_yolo(root: Path) -> Path:
    for i, (name, w, h, boxes) in enumerate(SCENE, 1):
        part = "val" if name.startswith("alley") else "train"  # the author's split, not ours
        _photo(root / "images" / part / name, w, h, i)
        if not boxes:
            continue  # no label file: a negative
        lines = []
        for k, (label, x1, y1, x2, y2) in enumerate(boxes):
            c = LABELS.index(label)
            if name == "drive7_000124.jpg" and k == 0:  # a segment polygon (a rectangle)
                pts = [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]
                lines.append(f"{c} " + " ".join(f"{x / w:.6f} {y / h:.6f}" for x, y in pts))
                continue
            line = (f"{c} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} "
                    f"{(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}")
            lines.append(line + (" 0.87" if k == 1 else ""))  # a sixth column: confidence
        lbl = (root / "labels" / part / name).with_suffix(".txt")
        lbl.parent.mkdir(parents=True, exist_ok=True)
        lbl.write_text("\n".join(lines) + "\n")
    names = "\n".join(f"  {k}: {n}" for k, n in enumerate(LABELS))
    (root / "data.yaml").write_text(f"path: .  # dataset root\ntrain: images/train\n"
                                    f"val: images/val\nnames:\n{names}\n")
    return root


def make_voc(root: Path) -> Path:
    for i, (name, w, h, boxes) in enumerate(SCENE, 1):
        _photo(root / "JPEGImages" / name, w, h, i)
        objs = "".join(
            f"<object><name>{label}</name><difficult>{int(k == 0)}</difficult><bndbox>"
            f"<xmin>{x1 + 1}</xmin><ymin>{y1 + 1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax>"
            "</bndbox></object>" for k, (label, x1, y1, x2, y2) in enumerate(boxes))
        size = "" if name == "market.jpg" else \
            f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>"
        xml = f"<annotation><folder>x</folder><filename>{name}</filename>{size}{objs}</annotation>"
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / Path(name).with_suffix(".xml").name).write_text(xml)
    return root


def make_aihub(root: Path) -> Path:
    """One file per photo, each in another of the forms the reader takes."""
    (name0, w0, h0, b0), (name1, w1, h1, b1), (name2, _, _, b2), (name3, w3, h3, b3), \
        (_, _, _, b4), (name5, w5, h5, _) = SCENE
    for i, (name, w, h, _) in enumerate(SCENE, 1):
        _photo(root / name, w, h, i)
    # AI-Hub road obstacles (juooo1117/ROADs): images list of one, category_id + categories
    _write_json(root / "drive7_000123.json", {
        "images": [{"id": 7, "file_name": name0, "width": w0, "height": h0}],
        "annotations": [{"id": k + 1, "image_id": 7, "category_id": LABELS.index(lb) + 10,
                         "bbox": [x1, y1, x2 - x1, y2 - y1]}
                        for k, (lb, x1, y1, x2, y2) in enumerate(b0)],
        "categories": [{"id": k + 10, "name": n} for k, n in enumerate(LABELS)]})
    # AI-Hub household waste (BUNRI-WIKI/project-workflow): IMAGE_INFO / ANNOTATION_INFO
    (lb_a, ax1, ay1, ax2, ay2), (lb_b, bx1, by1, bx2, by2) = b1
    _write_json(root / "drive7_000124.json", {
        "IMAGE_INFO": {"FILE_NAME": name1, "IMAGE_WIDTH": w1, "IMAGE_HEIGHT": h1},
        "ANNOTATION_INFO": [
            {"CLASS": lb_a, "SHAPE_TYPE": "BOX", "POINTS": [[ax1, ay1, ax2 - ax1, ay2 - ay1]]},
            {"CLASS": lb_b, "SHAPE_TYPE": "POLYGON",
             "POINTS": [[bx1, by1], [bx2, by1], [bx2, by2], [(bx1 + bx2) / 2, by2], [bx1, by2]]},
        ]})
    # "image" dict without a size (read from the file), "annotation", "class" + "box" x1y1x2y2
    _write_json(root / "alley_0001.json", {
        "image": {"filename": name2},
        "annotation": [{"class": lb, "box": [x1, y1, x2, y2]} for lb, x1, y1, x2, y2 in b2]})
    # mixed case keys, "objects", "points" corners, "bndbox" dict, numbers as strings
    (lb_p, px1, py1, px2, py2), (lb_q, qx1, qy1, qx2, qy2) = b3
    _write_json(root / "alley_0002.json", {
        "Image": {"File_Name": name3, "Width": str(w3), "Height": h3},
        "objects": [{"label": lb_p, "points": [[px1, py1], [px2, py2]]},
                    {"class_name": lb_q, "bndbox": {"xmin": str(qx1), "ymin": qy1,
                                                    "xmax": qx2, "ymax": qy2}}]})
    # no image info at all: the photo with the JSON's stem; bbox as a dict
    _write_json(root / "market.json", {
        "annotations": [{"object_class": lb, "bbox": {"x": x1, "y": y1, "w": x2 - x1,
                                                      "h": y2 - y1}}
                        for lb, x1, y1, x2, y2 in b4]})
    # a negative
    _write_json(root / "quiet_0005.json", {
        "images": {"file_name": name5, "width": w5, "height": h5}, "annotations": []})
    return root


def _by_name(samples: list[ds.Sample]) -> dict[str, ds.Sample]:
    return {s.image.name: s for s in samples}


def assert_scene(samples: list[ds.Sample], tol: float = 1.0) -> None:
    """The samples are SCENE's photos with SCENE's boxes (within ``tol`` pixels)."""
    got = _by_name(samples)
    assert sorted(got) == sorted(name for name, *_ in SCENE)
    for name, w, h, boxes in SCENE:
        s = got[name]
        assert s.image.is_absolute() and s.image.is_file()
        assert (s.width, s.height) == (w, h), name
        assert s.group == GROUPS[name], name
        assert len(s.boxes) == len(boxes), name
        for b, (label, x1, y1, x2, y2) in zip(s.boxes, boxes, strict=True):
            assert b.label == label, name
            assert np.allclose([b.x1, b.y1, b.x2, b.y2], [x1, y1, x2, y2], atol=tol), (name, b)


# --- the four readers agree -------------------------------------------------------------------


def test_every_form_reads_the_same_photos_and_boxes(tmp_path: Path) -> None:
    coco = ds.read_coco(make_coco(tmp_path / "coco"))
    yolo = ds.read_yolo(make_yolo(tmp_path / "yolo"))
    voc = ds.read_voc(make_voc(tmp_path / "voc"))
    aihub = ds.read_aihub(make_aihub(tmp_path / "aihub"))
    for samples in (coco, yolo, voc, aihub):
        assert_scene(samples)
    # exact where the form stores the same numbers: COCO, VOC after its 1-based shift, AI-Hub
    for samples in (voc, aihub):
        assert {n: (s.boxes, s.width, s.height, s.group) for n, s in _by_name(samples).items()} \
            == {n: (s.boxes, s.width, s.height, s.group) for n, s in _by_name(coco).items()}
    assert_scene(yolo, tol=0.01)  # normalised to 6 decimals: far below a pixel


def test_auto_detection_picks_each_form(tmp_path: Path) -> None:
    coco_json = make_coco(tmp_path / "coco")
    roots = {"coco": tmp_path / "coco", "yolo": make_yolo(tmp_path / "yolo"),
             "voc": make_voc(tmp_path / "voc"), "aihub": make_aihub(tmp_path / "aihub")}
    for fmt, root in roots.items():
        assert ds.detect_format(root) == fmt
        assert ds.read(root) == ds.read(root, fmt)
        assert_scene(ds.read(root))
    assert ds.detect_format(coco_json) == "coco"
    assert ds.read(coco_json) == ds.read_coco(coco_json)


def test_auto_detection_refuses_what_it_cannot_tell(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ds.DatasetError, match="cannot tell") as e:
        ds.read(tmp_path / "empty")
    for looked_for in ("COCO", "Annotations", "labels/", "AI-Hub"):
        assert looked_for in str(e.value)
    _write_json(tmp_path / "one.json", {"foo": 1})
    with pytest.raises(ds.DatasetError, match=r"one.json.*not COCO.*foo"):
        ds.read(tmp_path / "one.json")
    with pytest.raises(ds.DatasetError, match="unknown data set format 'kitti'"):
        ds.read(tmp_path / "empty", "kitti")
    with pytest.raises(ds.DatasetError, match="no such file"):
        ds.read(tmp_path / "nowhere")


def test_formats_constant() -> None:
    assert ds.FORMATS == ("coco", "yolo", "voc", "aihub")


# --- COCO -------------------------------------------------------------------------------------


def test_coco_groups_by_video_id_and_takes_an_images_dir(tmp_path: Path) -> None:
    js = make_coco(tmp_path / "coco", video_ids=True)
    got = {s.image.name: s.group for s in ds.read_coco(js)}
    assert got == {name: str(100 + k // 2) for k, (name, *_) in enumerate(SCENE)}
    # the JSON elsewhere, the images directory given
    moved = tmp_path / "elsewhere" / "instances.json"
    moved.parent.mkdir()
    js.rename(moved)
    assert len(ds.read_coco(moved, images=tmp_path / "coco" / "images")) == len(SCENE)
    with pytest.raises(ds.DatasetError, match=r"instances.json: image 1: drive7_000123.jpg not"):
        ds.read_coco(moved)


def test_coco_bad_input_names_the_file(tmp_path: Path) -> None:
    js = make_coco(tmp_path / "c")
    doc = json.loads(js.read_text())
    (tmp_path / "c" / "images" / "market.jpg").unlink()
    with pytest.raises(ds.DatasetError, match=r"annotations.json: image 5: market.jpg not found"):
        ds.read_coco(js)
    doc["annotations"][0]["category_id"] = 99
    _write_json(js, doc)
    with pytest.raises(ds.DatasetError, match=r"annotations.json: annotation 1: category_id 99"):
        ds.read_coco(js)
    doc["annotations"][0].update(category_id=1, bbox=[1, 2, 3])
    _write_json(js, doc)
    with pytest.raises(ds.DatasetError, match=r"annotation 1: bbox \[1, 2, 3\] is not"):
        ds.read_coco(js)
    js.write_text('{"images": [')
    with pytest.raises(ds.DatasetError, match=r"annotations.json: not readable JSON"):
        ds.read_coco(js)
    _write_json(js, {"images": [], "annotations": []})
    with pytest.raises(ds.DatasetError, match=r"annotations.json: not a COCO file.*categories"):
        ds.read_coco(js)


# --- YOLO -------------------------------------------------------------------------------------


@pytest.mark.parametrize("names_file, text", [
    ("data.yaml", "names: ['illegal_dumping', \"placard\", construction_site, trash_bin,\n"
                  "        traffic_sign, person, car]  # seven\nnc: 7\n"),
    ("data.yaml", "nc: 7\nnames:\n" + "".join(f"  - {n}\n" for n in LABELS) + "train: x\n"),
    ("data.yaml", "names: {" + ", ".join(f"{k}: '{n}'" for k, n in enumerate(LABELS)) + "}\n"),
    ("dataset.yaml", "names:\n" + "".join(f"  {k}: \"{n}\"  # c{k}\n"
                                          for k, n in enumerate(LABELS))),
    ("classes.txt", "\n".join(LABELS) + "\n\n"),
    ("obj.names", "\n".join(LABELS)),
    ("labels/classes.txt", "\n".join(LABELS)),
])
def test_yolo_class_names_in_each_place(tmp_path: Path, names_file: str, text: str) -> None:
    root = make_yolo(tmp_path / "y")
    (root / "data.yaml").unlink()
    (root / names_file).write_text(text)
    assert_scene(ds.read_yolo(root), tol=0.01)


def test_yolo_roboflow_layout(tmp_path: Path) -> None:
    """train/images + train/labels per split: the same photos, the same groups."""
    src = make_yolo(tmp_path / "src")
    dst = tmp_path / "rf"
    for part in ("train", "val"):
        (dst / part).mkdir(parents=True)
        (src / "images" / part).rename(dst / part / "images")
        (src / "labels" / part).rename(dst / part / "labels")
    (dst / "data.yaml").write_text((src / "data.yaml").read_text())
    assert ds.detect_format(dst) == "yolo"
    assert_scene(ds.read(dst), tol=0.01)


def test_yolo_bad_input_names_file_and_line(tmp_path: Path) -> None:
    root = make_yolo(tmp_path / "y")
    lbl = root / "labels" / "train" / "market.txt"
    lbl.write_text("0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n")
    with pytest.raises(ds.DatasetError, match=r"market.txt:2: class id 7 is out of range.*"
                                              r"data.yaml names 7 classes \(0..6\)"):
        ds.read_yolo(root)
    lbl.write_text("0 32 24 10 10\n")
    with pytest.raises(ds.DatasetError, match=r"market.txt:1: .*not normalised"):
        ds.read_yolo(root)
    lbl.write_text("0 0.5 0.5\n")
    with pytest.raises(ds.DatasetError, match=r"market.txt:1: 3 columns"):
        ds.read_yolo(root)
    lbl.write_text("0 0.5 0.5 0.2 zero\n")
    with pytest.raises(ds.DatasetError, match=r"market.txt:1: not numbers"):
        ds.read_yolo(root)
    lbl.write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "images" / "train" / "market.jpg").unlink()
    with pytest.raises(ds.DatasetError, match=r"market.txt: no image for this label file"):
        ds.read_yolo(root)
    (root / "data.yaml").unlink()
    with pytest.raises(ds.DatasetError, match=r"no class names: looked for .*data.yaml"):
        ds.read_yolo(root)


def test_an_unreadable_photo_is_refused_by_name(tmp_path: Path) -> None:
    root = make_yolo(tmp_path / "y")
    (root / "images" / "train" / "market.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ds.DatasetError, match=r"market.jpg is not a readable image"):
        ds.read_yolo(root)


# --- VOC --------------------------------------------------------------------------------------


def test_voc_bad_input_names_the_file(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "v")
    (root / "JPEGImages" / "alley_0001.jpg").unlink()
    with pytest.raises(ds.DatasetError, match=r"alley_0001.xml: image alley_0001.jpg not found"):
        ds.read_voc(root)
    (root / "Annotations" / "alley_0001.xml").unlink()
    (root / "Annotations" / "market.xml").write_text("<annotation><object>")
    with pytest.raises(ds.DatasetError, match=r"market.xml: not readable XML"):
        ds.read_voc(root)
    (root / "Annotations" / "market.xml").write_text(
        "<annotation><filename>market.jpg</filename><object><name>car</name></object>"
        "</annotation>")
    with pytest.raises(ds.DatasetError, match=r"market.xml: object 1: needs a <name> and a"):
        ds.read_voc(root)


def test_voc_image_found_by_stem_when_filename_is_stale(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "v")
    xml = root / "Annotations" / "market.xml"
    xml.write_text(xml.read_text().replace("<filename>market.jpg", "<filename>IMG_9.JPG"))
    assert_scene(ds.read_voc(root))


# --- AI-Hub -----------------------------------------------------------------------------------


def test_aihub_images_in_a_sibling_or_a_distant_directory(tmp_path: Path) -> None:
    root = tmp_path / "a"
    # AI-Hub's own layout: labels and photos in parallel trees
    _photo(root / "1.Training" / "원천데이터" / "TS_site" / "cam3_0001.jpg", 64, 48)
    _write_json(root / "1.Training" / "라벨링데이터" / "TL_site" / "cam3_0001.json", {
        "images": [{"file_name": "cam3_0001.jpg", "width": 64, "height": 48}],
        "annotations": [{"category_name": "불법투기", "bbox": [1, 2, 10, 20]}]})
    # labels/ beside photos/: a sibling directory
    _photo(root / "photos" / "cam4_0002.jpg", 64, 48)
    _write_json(root / "labels" / "cam4_0002.json", {
        "image": {"file_name": "cam4_0002.jpg", "video_id": "v4"},
        "annotations": [{"label": "현수막", "segmentation": [[1, 1, 30, 1, 30, 9, 1, 9]]}]})
    got = _by_name(ds.read(root))
    a, b = got["cam3_0001.jpg"], got["cam4_0002.jpg"]
    assert a.boxes == (ds.Box("불법투기", 1, 2, 11, 22),)
    assert a.group == "1.Training/원천데이터/TS_site/cam3"
    assert (b.width, b.height, b.group) == (64, 48, "v4")
    assert b.boxes == (ds.Box("현수막", 1, 1, 30, 9),)
    # the same name twice under the root: refused, not guessed
    _photo(root / "2.Validation" / "cam3_0001.jpg", 64, 48)
    with pytest.raises(ds.DatasetError, match=r"cam3_0001.json: image cam3_0001.jpg is ambig"):
        ds.read_aihub(root)


def test_aihub_category_id_without_categories_is_its_own_label(tmp_path: Path) -> None:
    _photo(tmp_path / "a" / "x.jpg", 64, 48)
    _write_json(tmp_path / "a" / "x.json", {"images": [{"file_name": "x.jpg"}],
                                            "annotations": [{"category_id": 4,
                                                             "bbox": [0, 0, 5, 5]}]})
    assert ds.read_aihub(tmp_path / "a")[0].boxes == (ds.Box("4", 0, 0, 5, 5),)


def test_aihub_bad_input_names_the_file(tmp_path: Path) -> None:
    root = make_aihub(tmp_path / "a")
    _write_json(root / "market.json", {"FileInfo": {"Width": 64}, "ObjectInfo": {}})
    with pytest.raises(ds.DatasetError, match=r"market.json: not a form of AI-Hub label file"
                                              r".*keys \['FileInfo', 'ObjectInfo'\]"):
        ds.read_aihub(root)
    _write_json(root / "market.json", {"annotations": [{"id": 5, "class": "x", "area": 3}]})
    with pytest.raises(ds.DatasetError, match=r"market.json: annotation 5: no box.*\['area', "):
        ds.read_aihub(root)
    _write_json(root / "market.json", {"annotations": [{"bbox": [0, 0, 1, 1], "area": 3}]})
    with pytest.raises(ds.DatasetError, match=r"market.json: annotation #0: no class"):
        ds.read_aihub(root)
    _write_json(root / "market.json", {"annotations": [{"category_id": 3, "bbox": [0, 0, 1, 1]}],
                                       "categories": [{"id": 1, "name": "a"}]})
    with pytest.raises(ds.DatasetError, match=r"market.json: annotation #0: category_id 3 is "):
        ds.read_aihub(root)
    _write_json(root / "market.json", {"annotations": [{"class": "a", "bbox": [0, "x", 1, 1]}]})
    with pytest.raises(ds.DatasetError, match=r"market.json: annotation #0: bbox is 'x'"):
        ds.read_aihub(root)
    _write_json(root / "market.json", {"images": [{"file_name": "market.jpg"}] * 2,
                                       "annotations": []})
    with pytest.raises(ds.DatasetError, match=r"market.json: 'images' lists 2 images"):
        ds.read_aihub(root)
    (root / "market.json").write_text("{broken")
    with pytest.raises(ds.DatasetError, match=r"market.json: not readable JSON"):
        ds.read_aihub(root)
    (root / "market.json").unlink()
    (root / "alley_0001.jpg").unlink()
    with pytest.raises(ds.DatasetError, match=r"alley_0001.json: image alley_0001.jpg not found"):
        ds.read_aihub(root)


# --- clipping ---------------------------------------------------------------------------------


def test_boxes_outside_the_photo_are_clipped_and_empty_ones_dropped_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _photo(tmp_path / "c" / "images" / "a.jpg", 64, 48)
    _write_json(tmp_path / "c" / "annotations.json", {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [-5, 40, 20, 20]},  # clipped
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [70, 10, 5, 5]},  # outside
            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [10, 10, 0, 5]},  # no area
            {"id": 4, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}],  # fine
        "categories": [{"id": 1, "name": "placard"}]})
    with caplog.at_level(logging.WARNING, logger="datasets"):
        (s,) = ds.read(tmp_path / "c")
    assert s.boxes == (ds.Box("placard", 0, 40, 15, 48), ds.Box("placard", 1, 1, 6, 6))
    (msg,) = [r.getMessage() for r in caplog.records]
    assert "1 boxes reached outside their photo and were clipped" in msg
    assert "2 had no area inside it and were dropped" in msg
    assert "annotations.json" in msg


# --- class mapping ----------------------------------------------------------------------------


def _cmap(tmp_path: Path, text: str = MAPPING) -> ds.ClassMap:
    (tmp_path / "classes.toml").write_text(text, encoding="utf-8")
    return ds.ClassMap.load(tmp_path / "classes.toml", OUR_CLASSES)


def test_class_map_maps_ignores_and_drops(tmp_path: Path) -> None:
    cmap = _cmap(tmp_path)
    assert cmap.targets == {"illegal_dumping": 0, "placard": 1, "construction_site": 2,
                            "trash_bin": 3, "traffic_sign": 4}
    assert cmap.ignored == {"car"} and cmap.dropped == {"person"}
    samples = ds.read_coco(make_coco(tmp_path / "coco"))
    cmap.check(samples)
    got = {s.image.name: cmap.apply(s) for s in samples}
    assert got["alley_0002.png"] == [(-1, 30, 20, 63, 47)]  # car ignored, person dropped
    assert got["drive7_000124.jpg"] == [(1, 10, 10, 50, 30), (3, 2, 30, 12, 46)]
    assert got["quiet_0005.jpg"] == []
    assert [t for _, t in ds.map_samples(samples, cmap)] == [cmap.apply(s) for s in samples]


def test_the_example_mapping_file_loads() -> None:
    cmap = ds.ClassMap.load(ROOT / "models" / "train" / "classes.example.toml", OUR_CLASSES)
    assert cmap.targets["illegal_dumping"] == 0 and "person" in cmap.dropped


def test_class_map_refuses_an_unknown_target(tmp_path: Path) -> None:
    with pytest.raises(ds.DatasetError, match=r"classes.toml: \[classes\] \"tree\" = \"shrub\": "
                                              r"not one of our classes \(garbage, banner"):
        _cmap(tmp_path, MAPPING + '"tree" = "shrub"\n')
    with pytest.raises(ds.DatasetError, match=r"classes.toml: \[classes\] \"tree\" = 3"):
        _cmap(tmp_path, MAPPING + '"tree" = 3\n')
    with pytest.raises(ds.DatasetError, match=r"classes.toml: not a readable TOML"):
        _cmap(tmp_path, "[classes\n")
    with pytest.raises(ds.DatasetError, match=r"classes.toml: needs a \[classes\] table"):
        _cmap(tmp_path, "[other]\na = 1\n")


def test_class_map_refuses_labels_it_does_not_mention_listing_them(tmp_path: Path) -> None:
    cmap = _cmap(tmp_path)
    s = ds.Sample(Path("/x/a.jpg"), 64, 48, (
        ds.Box("bicycle", 0, 0, 1, 1), ds.Box("dog", 0, 0, 1, 1), ds.Box("bicycle", 0, 0, 1, 1),
        ds.Box("placard", 0, 0, 1, 1), ds.Box("bicycle", 1, 1, 2, 2)), "a")
    for call in (lambda: cmap.check([s]), lambda: ds.map_samples([s], cmap)):
        with pytest.raises(ds.DatasetError) as e:
            call()
        msg = str(e.value)
        assert "classes.toml" in msg and "2 label(s)" in msg
        assert '"bicycle" (3 boxes), "dog" (1 boxes)' in msg
    with pytest.raises(ds.DatasetError, match=r"a.jpg: label 'bicycle' is not in"):
        cmap.apply(s)


# --- split ------------------------------------------------------------------------------------


def _recordings(sizes: list[int]) -> list[ds.Sample]:
    return [ds.Sample(Path(f"/d/rec{g:02d}/f_{i:04d}.jpg"), 64, 48, (), f"rec{g:02d}")
            for g, n in enumerate(sizes) for i in range(n)]


def _parts_of_groups(parts: dict[str, list[ds.Sample]]) -> dict[str, set[str]]:
    return {p: {s.group for s in v} for p, v in parts.items()}


def test_split_keeps_every_recording_in_one_part() -> None:
    samples = _recordings([random.Random(3).randint(1, 15) for _ in range(30)])
    parts = ds.split(samples, seed=1)
    assert set(parts) == {"train", "val", "held_out"}
    assert sorted(s.image for v in parts.values() for s in v) == sorted(s.image for s in samples)
    g = _parts_of_groups(parts)
    assert not (g["train"] & g["val"]) and not (g["train"] & g["held_out"]) \
        and not (g["val"] & g["held_out"])


def test_split_does_not_depend_on_read_order_but_on_the_seed() -> None:
    samples = _recordings([5] * 20)
    shuffled = samples[:]
    random.Random(7).shuffle(shuffled)
    assert ds.split(samples, seed=1) == ds.split(shuffled, seed=1)
    assert ds.split(samples, seed=1) == ds.split(list(reversed(samples)), seed=1)
    assert _parts_of_groups(ds.split(samples, seed=1)) != \
        _parts_of_groups(ds.split(samples, seed=2))


def test_split_respects_the_fractions_roughly_by_image_count() -> None:
    sizes = [random.Random(11).randint(2, 12) for _ in range(40)]
    total = sum(sizes)
    for seed in range(5):
        parts = ds.split(_recordings(sizes), seed=seed, val=0.15, held_out=0.1)
        assert abs(len(parts["val"]) / total - 0.15) < 0.05, seed
        assert abs(len(parts["held_out"]) / total - 0.1) < 0.05, seed


def test_split_gives_each_part_a_recording() -> None:
    for sizes in ([50, 1, 1], [1, 1, 50], [3, 3, 3], [1, 1, 10, 1]):
        for seed in range(4):
            for val, held in ((0.1, 0.1), (0.45, 0.45), (0.01, 0.01)):
                parts = ds.split(_recordings(sizes), seed=seed, val=val, held_out=held)
                assert all(parts[p] for p in ("train", "val", "held_out")), (sizes, seed, val)


def test_split_needs_three_recordings_to_hold_some_out() -> None:
    with pytest.raises(ds.DatasetError, match=r"2 recording\(s\) \(rec00, rec01\).*at least 3 "
                                              r"recordings to hold some out"):
        ds.split(_recordings([10, 10]), seed=1)
    two = ds.split(_recordings([10, 10]), seed=1, held_out=0)
    assert _parts_of_groups(two)["held_out"] == set() and all(two[p] for p in ("train", "val"))
    one = ds.split(_recordings([10]), seed=1, val=0, held_out=0)
    assert len(one["train"]) == 10 and not one["val"] and not one["held_out"]
    with pytest.raises(ds.DatasetError, match=r"val=0.6 \+ held_out=0.5"):
        ds.split(_recordings([1, 1, 1]), seed=1, val=0.6, held_out=0.5)
    with pytest.raises(ds.DatasetError, match=r"val=-0.1 is not a fraction"):
        ds.split(_recordings([1, 1, 1]), seed=1, val=-0.1)


def test_split_of_a_read_set_keeps_frames_of_a_drive_together(tmp_path: Path) -> None:
    samples = ds.read_voc(make_voc(tmp_path / "v"))
    parts = ds.split(samples, seed=4)
    where = {s.image.name: p for p, v in parts.items() for s in v}
    assert where["drive7_000123.jpg"] == where["drive7_000124.jpg"]
    assert where["alley_0001.jpg"] == where["alley_0002.png"]


def test_group_of_a_file_name() -> None:
    root = Path("/data")
    assert ds.group_of(Path("/data/drive7_000123.jpg"), root) == "drive7"
    assert ds.group_of(Path("/data/drive7_000124.jpg"), root) == "drive7"
    assert ds.group_of(Path("/data/rec_0012_frame_00031.jpg"), root) == "rec_0012_frame"
    assert ds.group_of(Path("/data/a/b/clip-17.png"), root) == "a/b/clip"
    assert ds.group_of(Path("/data/street.jpg"), root) == "street"
    assert ds.group_of(Path("/data/rec_04/000031.jpg"), root) == "rec_04"
    assert ds.group_of(Path("/elsewhere/x_1.jpg"), root) == "x"
