"""The map page in a real browser: Debian's chromium, headless and driven by selenium through
Debian's chromedriver (no browser is downloaded), against ``patrol-office serve`` with a
SQLite store, fed by the sample drive replayed through a real Mosquitto.

What the page shows is checked against what the office's API says, never against numbers
written here: the sample drive may be made again with other findings.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.conftest import Mosquitto, agent_cmd
from tests.office_rig import OfficeServer, office_cmd, wait_counts

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "drive"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
USER, PASSWORD = "officer", "patrol-office-test"
WAIT_S = 15


@pytest.fixture(scope="module")
def office(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OfficeServer]:
    """The office with the sample drive's complaints in it, and one officer who can log in."""
    tmp = tmp_path_factory.mktemp("office-page")
    broker = Mosquitto(tmp / "broker").start()
    hashed = subprocess.run(office_cmd("hash-password"), input=PASSWORD + "\n",
                            capture_output=True, text=True, timeout=60)
    assert hashed.returncode == 0, hashed.stderr
    server = OfficeServer(tmp, broker.port, f"sqlite:///{tmp / 'office.sqlite'}",
                          client_id="office-page-test", config=(
                              f'[[users]]\nname = "{USER}"\n'
                              f'password_hash = "{hashed.stdout.strip()}"\n'))
    try:
        r = subprocess.run(agent_cmd("replay", "--video", str(SAMPLE / "video.mp4"),
                                     "--nmea", str(SAMPLE / "track.nmea"), "--speed", "max",
                                     "--db", str(tmp / "outbox.db"),
                                     "--broker", f"127.0.0.1:{broker.port}", "--quiet"),
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        delivered = re.search(r"(\d+) findings delivered", r.stdout)
        assert delivered and int(delivered[1]) >= 2, r.stdout
        wait_counts(server, sightings=int(delivered[1]))
        yield server
    finally:
        server.stop()
        broker.stop()


@pytest.fixture(scope="module")
def driver() -> Iterator[WebDriver]:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        assert path.exists(), f"{path} is missing: apt-get install {package}"
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,900", "--lang=en-US",
                # Nothing but the office on loopback: no update checks, no Google services.
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-default-apps", "--disable-domain-reliability",
                "--no-first-run", "--no-default-browser-check"):
        opts.add_argument(arg)
    opts.add_experimental_option("prefs", {"intl.accept_languages": "en-US,en"})
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(options=opts, service=Service(str(CHROMEDRIVER)))
    try:
        yield d
    finally:
        d.quit()


def wait(d: WebDriver, timeout: float = WAIT_S) -> WebDriverWait:
    return WebDriverWait(d, timeout)


def features(office: OfficeServer, query: str = "") -> list[dict[str, Any]]:
    return office.get("/api/complaints.geojson" + query)["features"]


def open_page(d: WebDriver, office: OfficeServer) -> None:
    """The page afresh, logged out and in the browser's language (English)."""
    d.get(office.base + "/healthz")
    d.delete_all_cookies()
    d.execute_script("window.localStorage.clear()")
    d.get(office.base + "/")
    wait(d).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#list .complaint-item"))
    d.get_log("browser")  # what came before this load is another test's


def list_ids(d: WebDriver) -> list[str]:
    # In one go: the list is drawn anew whenever the complaints reload.
    return d.execute_script("return Array.from(document.querySelectorAll("
                            "'#list .complaint-item'), function (li) { return li.dataset.id; });")


def open_popup(d: WebDriver, cid: str) -> WebElement:
    d.find_element(By.CSS_SELECTOR, f'#list .complaint-item[data-id="{cid}"]').click()
    return wait(d).until(EC.visibility_of_element_located(
        (By.CSS_SELECTOR, f'.leaflet-popup .popup[data-id="{cid}"]')))


def image_loaded(d: WebDriver, selector: str) -> bool:
    return bool(d.execute_script(
        "var i = document.querySelector(arguments[0]);"
        "return !!i && i.complete && i.naturalWidth > 0;", selector))


def markers_on_map(d: WebDriver) -> int:
    return d.execute_script(
        "var n = document.querySelectorAll('.complaint-marker').length;"
        "document.querySelectorAll('.marker-cluster span').forEach(function (s) {"
        "  n += parseInt(s.textContent, 10); });"
        "return n;")


def popup_status(d: WebDriver) -> str | None:
    """The open popup's status (read in one go: a reload of the list rewrites it)."""
    return d.execute_script(
        "var s = document.querySelector('.leaflet-popup .popup-status-text');"
        "return s && s.getAttribute('data-status');")


def text_of(d: WebDriver, selector: str) -> str:
    """An element's text read in one go (the page rewrites its list and popups as data come,
    so a found element can be gone before its text is asked for)."""
    return d.execute_script("var e = document.querySelector(arguments[0]);"
                            "return e ? e.innerText : null;", selector)


def severe(d: WebDriver) -> list[str]:
    return [e["message"] for e in d.get_log("browser") if e["level"] == "SEVERE"]


def login(d: WebDriver, user: str, password: str) -> None:
    d.find_element(By.ID, "login-user").clear()
    d.find_element(By.ID, "login-user").send_keys(user)
    d.find_element(By.ID, "login-password").clear()
    d.find_element(By.ID, "login-password").send_keys(password)
    d.find_element(By.ID, "login-submit").click()


def test_the_page_shows_the_drives_complaints_from_the_office_alone(
        driver: WebDriver, office: OfficeServer) -> None:
    """Every complaint is in the list and on the map, the unit in the fleet panel, the
    plain background says there are no tiles, and every file came from the office."""
    # Telemetry is QoS 0 (docs/mqtt.md): the replay's one report may not have come.
    fleet = office.get("/api/fleet")
    open_page(driver, office)
    want = {f["id"] for f in features(office)}
    assert set(list_ids(driver)) == want
    # Each complaint is a marker of its own or counted in a cluster's number (once the
    # clusters of the zoom before the first fit are gone).
    wait(driver).until(lambda d: markers_on_map(d) == len(want))
    assert fleet
    for u in fleet:
        unit = driver.find_element(By.CSS_SELECTOR, f'#fleet .unit[data-device="{u["device"]}"]')
        assert u["device"] in unit.text
        assert ("fps" if u["telemetry"] else "Telemetry\nnone yet") in unit.text
    assert driver.find_element(By.ID, "tiles-note").text == "no map tiles configured"
    assert "no-tiles" in driver.find_element(By.ID, "map").get_attribute("class")
    loaded = driver.execute_script(
        "return performance.getEntriesByType('resource').map(function (e) { return e.name; })")
    assert loaded and all(u.startswith(office.base + "/") for u in loaded), loaded
    assert any(u.endswith("/static/vendor/leaflet/leaflet.js") for u in loaded)
    assert severe(driver) == []


def test_unticking_a_class_leaves_the_others_in_the_list_and_the_csv(
        driver: WebDriver, office: OfficeServer) -> None:
    open_page(driver, office)
    classes = Counter(f["properties"]["class"] for f in features(office))
    assert len(classes) >= 2, f"the sample drive has one class only: {classes}"
    dropped = classes.most_common(1)[0][0]
    driver.find_element(By.CSS_SELECTOR, f"#filter-class input[name=class][value={dropped}]"
                        ).click()
    kept = sorted(c for c in office.get("/api/config")["classes"] if c != dropped)
    want = {f["id"] for f in features(office, "?class=" + ",".join(kept))}
    assert want and len(want) == sum(classes.values()) - classes[dropped]
    wait(driver).until(lambda d: set(list_ids(d)) == want)
    href = driver.find_element(By.ID, "csv-link").get_attribute("href")
    assert href.startswith(office.base + "/api/complaints.csv?")
    with urllib.request.urlopen(href, timeout=10) as r:
        rows = list(csv.DictReader(io.StringIO(r.read().decode())))
    assert {row["id"] for row in rows} == want


def test_a_popup_shows_the_complaint_with_its_pictures(
        driver: WebDriver, office: OfficeServer) -> None:
    open_page(driver, office)
    f = next(f for f in features(office) if f["properties"]["crop_url"])
    popup = open_popup(driver, f["id"])
    wait(driver).until(lambda d: image_loaded(d, ".leaflet-popup .popup-crop"))
    wait(driver).until(lambda d: image_loaded(d, ".leaflet-popup .popup-image"))
    assert popup_status(driver) == f["properties"]["status"]
    assert text_of(driver, ".leaflet-popup .popup-status-text") == (
        f["properties"]["status"].capitalize())
    assert ", ".join(f["properties"]["vehicles"]) in text_of(driver, ".leaflet-popup .popup")
    # Logged out: the facts, no way to change them.
    assert not popup.find_elements(By.CSS_SELECTOR, ".popup-status")


def test_a_wrong_password_shows_the_offices_error(
        driver: WebDriver, office: OfficeServer) -> None:
    open_page(driver, office)
    code, body = office.status("/api/login", "POST",
                               json.dumps({"user": USER, "password": "not-it"}).encode(),
                               {"Content-Type": "application/json"})
    assert code == 401
    login(driver, USER, "not-it")
    message = wait(driver).until(EC.visibility_of_element_located((By.ID, "message")))
    assert json.loads(body)["error"] in message.text
    assert "error" in message.get_attribute("class")
    assert not driver.find_element(By.ID, "whoami").is_displayed()
    assert driver.find_element(By.ID, "login-form").is_displayed()


def test_an_officer_changes_a_status_and_it_stays(
        driver: WebDriver, office: OfficeServer, tmp_path: Path) -> None:
    open_page(driver, office)
    login(driver, USER, PASSWORD)
    whoami = wait(driver).until(EC.visibility_of_element_located((By.ID, "whoami")))
    assert USER in whoami.text
    assert driver.find_element(By.ID, "logout").is_displayed()
    cid = next(f["id"] for f in features(office, "?status=new"))
    popup = open_popup(driver, cid)
    Select(popup.find_element(By.CSS_SELECTOR, ".popup-status")).select_by_value("dispatched")
    popup.find_element(By.CSS_SELECTOR, ".popup-note").send_keys("crew 3 sent")
    popup.find_element(By.CSS_SELECTOR, ".popup-save").click()
    wait(driver).until(lambda d: popup_status(d) == "dispatched")
    wait(driver).until(lambda d: image_loaded(d, ".leaflet-popup .popup-crop"))
    driver.save_screenshot(str(tmp_path / "office-page.png"))
    with contextlib.suppress(OSError):
        shutil.copy(tmp_path / "office-page.png", "/tmp/office-page.png")

    detail = office.get(f"/api/complaints/{cid}")
    assert detail["status"] == "dispatched"
    assert (detail["history"][-1]["by"], detail["history"][-1]["note"]) == (USER, "crew 3 sent")

    driver.refresh()
    wait(driver).until(lambda d: cid in list_ids(d))
    assert "Dispatched" in text_of(driver, f'#list .complaint-item[data-id="{cid}"]')
    open_popup(driver, cid)
    assert text_of(driver, ".leaflet-popup .popup-status-text") == "Dispatched"
    wait(driver).until(lambda d: "crew 3 sent" in text_of(d, ".leaflet-popup .popup-history"))
    assert USER in driver.find_element(By.ID, "whoami").text  # still logged in

    driver.find_element(By.ID, "logout").click()
    wait(driver).until(EC.visibility_of_element_located((By.ID, "login-form")))
    code, _ = office.status(f"/api/complaints/{cid}/status", "POST",
                            json.dumps({"status": "resolved"}).encode(),
                            {"Content-Type": "application/json"})
    assert code == 401


def test_the_page_speaks_korean_too(driver: WebDriver, office: OfficeServer) -> None:
    open_page(driver, office)
    assert driver.find_element(By.TAG_NAME, "h1").text == "Civil-complaint map"
    driver.find_element(By.ID, "lang").click()
    assert driver.find_element(By.TAG_NAME, "h1").text == "민원 요소 지도"
    assert driver.find_element(By.ID, "tiles-note").text == "지도 타일 없음"
    labels = {i.get_attribute("value"): i.find_element(By.XPATH, "..").text
              for i in driver.find_elements(By.CSS_SELECTOR, "#filter-class input")}
    assert labels["garbage"] == "불법 투기 쓰레기" and labels["banner"] == "불법 현수막"
    statuses = {f["properties"]["status"] for f in features(office)}
    badges = set(driver.execute_script(
        "return Array.from(document.querySelectorAll('#list .status-badge'),"
        " function (b) { return b.innerText; });"))
    korean = {"new": "신규", "dispatched": "출동", "confirmed": "확인됨", "resolved": "처리 완료",
              "rejected": "반려", "duplicate": "중복"}
    assert badges == {korean[s] for s in statuses}
    # The choice is kept for the next visit.
    driver.refresh()
    wait(driver).until(lambda d: d.find_element(By.TAG_NAME, "h1").text == "민원 요소 지도")


def test_an_officer_splits_a_wrong_merge(driver: WebDriver, office: OfficeServer) -> None:
    """Two vans saw two dumps 8 m apart and the office made one complaint of them; an
    officer ticks the other dump's sighting in the popup and splits it out."""
    from tests.office_rig import FakeFleet, at
    port = int(office.args[office.args.index("--broker") + 1].rsplit(":", 1)[1])
    fleet = FakeFleet(port, client_id="page-split-fleet")
    lat, lon = 37.6610, 126.8360  # clear of the sample drive
    first = fleet.finding("van-x", "garbage", lat, lon, at(0, 1), seed=70)
    other = fleet.finding("van-y", "garbage", lat + 0.00007, lon, at(0, 9), seed=71)
    fleet.close()
    wait(driver, 30).until(lambda d: office.status(f"/api/complaints/{first.id}")[0] == 200
                           and office.get(f"/api/complaints/{first.id}")["sightings"] == 2)
    open_page(driver, office)
    login(driver, USER, PASSWORD)
    wait(driver).until(EC.visibility_of_element_located((By.ID, "whoami")))
    open_popup(driver, first.id)

    def split_done(d: WebDriver) -> bool:
        if office.get(f"/api/complaints/{first.id}")["sightings"] == 1:
            return True
        # The popup is drawn again when its detail or a reload of the list comes, and moves
        # while its pictures load and the map pans to fit it: tick and split until it took.
        try:
            boxes = d.find_elements(By.CSS_SELECTOR, ".leaflet-popup .popup-sighting-pick")
            for box in boxes:
                if box.is_selected() != (box.get_attribute("value") == other.id):
                    box.click()
            if len(boxes) == 2 and [b.get_attribute("value") for b in boxes
                                    if b.is_selected()] == [other.id]:
                d.find_element(By.CSS_SELECTOR, ".leaflet-popup .popup-split").click()
        except (StaleElementReferenceException, NoSuchElementException,
                ElementClickInterceptedException):
            pass
        return False
    wait(driver).until(split_done)
    wait(driver).until(lambda d: other.id in list_ids(d) and first.id in list_ids(d))
    assert office.get(f"/api/complaints/{first.id}")["sightings"] == 1
    split = office.get(f"/api/complaints/{other.id}")
    assert split["sightings"] == 1 and split["vehicles"] == ["van-y"]
    assert split["history"][-1]["by"] == USER and "split from" in split["history"][-1]["note"]
    driver.find_element(By.ID, "logout").click()
