"""A real mosquitto on a free loopback port for the tests: sim.broker's, in a test's tmpdir."""

from __future__ import annotations

from sim.broker import Mosquitto as _Mosquitto
from sim.broker import find_mosquitto, free_port  # noqa: F401 - re-exported for the tests

MOSQUITTO = find_mosquitto()


class Mosquitto(_Mosquitto):
    """``Mosquitto(tmpdir, port=None, persistence=False).start()`` ... ``stop()``; start() again
    restarts it on the same port."""

    def __init__(self, tmpdir, port: int | None = None, persistence: bool = False) -> None:
        if MOSQUITTO is None:
            raise RuntimeError("mosquitto is not installed")
        super().__init__(MOSQUITTO, workdir=str(tmpdir), port=port, persistence=persistence)
