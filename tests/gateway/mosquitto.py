"""Start/stop a real mosquitto broker on a free loopback port for the gateway tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    """``mosquitto -c <conf>``: listener on 127.0.0.1:<port>, anonymous, no persistence."""

    def __init__(self, tmpdir, port: int | None = None) -> None:
        if MOSQUITTO is None:
            raise RuntimeError("mosquitto is not installed")
        self.port = port or free_port()
        self.conf = os.path.join(str(tmpdir), f"mosquitto-{self.port}.conf")
        self.log = os.path.join(str(tmpdir), f"mosquitto-{self.port}.log")
        with open(self.conf, "w") as f:
            f.write(
                f"listener {self.port} 127.0.0.1\n"
                "allow_anonymous true\n"
                "persistence false\n"
                f"log_dest file {self.log}\n"
            )
            if hasattr(os, "geteuid") and os.geteuid() == 0:
                # as root mosquitto drops to the "mosquitto" user, who cannot write the test's
                # private temp dir: no log, and no persistence file where a test turns it on
                f.write("user root\n")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 5.0) -> "Mosquitto":
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", self.conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError("mosquitto did not start listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
