"""gpsfake: a real gpsd on a free loopback port, serving an NMEA log in real time.

``replay --speed 1`` uses it so that a recorded drive's fixes reach the agent the way
a receiver's do on the road: through gpsd, late by gpsd's delivery delay.

gpsfake and the gpsd it starts must not outlive the agent, even one killed with
SIGKILL: gpsfake is started with a parent-death signal (SIGTERM, on which gpsfake
stops its gpsd), in a session of its own so that an orderly stop can end both.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

log = logging.getLogger("gps")

PR_SET_PDEATHSIG = 1
try:  # looked up here, not in the forked child, where loading a library could deadlock
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: no parent-death signal, only an orderly stop
    _prctl = None


class GpsfakeError(Exception):
    """gpsfake cannot be started; the message says why."""


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the agent's main thread dies."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Gpsfake:
    """gpsfake serving ``log_path`` one line every ``cycle_s``, once, on a free port."""

    def __init__(self, log_path: Path, cycle_s: float) -> None:
        exe = shutil.which("gpsfake")
        if exe is None:
            raise GpsfakeError("--speed 1 needs gpsfake (Debian package gpsd-clients); use "
                               "--speed max to read the NMEA log directly")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        # Started from the main thread: the parent-death signal is tied to the thread
        # that forks, and the main thread lives as long as the agent.
        self.proc = subprocess.Popen(
            [exe, "-q", "-1", "-P", str(self.port), "-c", f"{cycle_s:.4f}", str(log_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=_die_with_parent)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise GpsfakeError(f"gpsfake exited at start (status {self.proc.returncode}) "
                                   f"serving {log_path}")
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=0.2):
                return
            time.sleep(0.05)
        self.stop()
        raise GpsfakeError(f"gpsfake's gpsd did not start listening on port {self.port}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            # gpsfake sometimes sits in its own shutdown (waiting on its gpsd) well past a
            # SIGTERM; the replay is over and its results stored, so end the group outright.
            log.warning("gpsfake did not stop on SIGTERM; killing it")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
