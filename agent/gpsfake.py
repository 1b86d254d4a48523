"""gpsfake: a real gpsd on a free loopback port, serving an NMEA log in real time.

``replay --speed 1`` uses it so that a recorded drive's fixes reach the agent the way
a receiver's do on the road: through gpsd, late by gpsd's delivery delay.

gpsfake and the gpsd it starts must not outlive the agent, even one killed with
SIGKILL. gpsfake's own SIGTERM handling is not enough (it can sit in a write to its
pseudo-terminal after stopping gpsd), and a parent-death signal would reach gpsfake
only, not its gpsd. So gpsfake runs under a small guard (this module run as a
program), in a process group of its own, and the guard holds a pipe from the agent:
when the agent goes, however it goes, the kernel closes that pipe, and the guard
kills the whole group (gpsfake and gpsd) at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("gps")


class GpsfakeError(Exception):
    """gpsfake cannot be started; the message says why."""


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
        cmd = [exe, "-q", "-1", "-P", str(self.port), "-c", f"{cycle_s:.4f}", str(log_path)]
        # The guard's stdin is the pipe whose end is the agent's life.
        self.guard = subprocess.Popen([sys.executable, "-m", "agent.gpsfake", *cmd],
                                      stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.guard.poll() is not None:
                raise GpsfakeError(f"gpsfake exited at start serving {log_path}")
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=0.2):
                return
            time.sleep(0.05)
        self.stop()
        raise GpsfakeError(f"gpsfake's gpsd did not start listening on port {self.port}")

    def stop(self) -> None:
        """End gpsfake and its gpsd (by closing the guard's pipe)."""
        if self.guard.stdin is not None:
            with contextlib.suppress(OSError):
                self.guard.stdin.close()
        try:
            self.guard.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log.warning("gpsfake's guard did not stop; killing it")
            self.guard.kill()
            self.guard.wait()


def _guard(cmd: list[str]) -> int:
    """Run ``cmd`` (gpsfake) in a process group of its own until standard input ends,
    then kill the whole group."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(_guard(sys.argv[1:]))
