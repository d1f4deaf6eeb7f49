"""The MQTT broker the demo publishes to: the user's, a local mosquitto, or an embedded amqtt.

A new user should see the demo run with nothing but `pip install`, so when no broker is given and
mosquitto is not installed, an amqtt broker (pure Python, MQTT 3.1.1, QoS 1 and persistent
sessions) runs in a thread of this process. Every broker started here listens on a free loopback
port only and is stopped by `stop()`; a broker given by URL is used as it is and never stopped.

    broker = sim.broker.choose("mqtt://10.0.0.5:1883" or None).start()
    ... broker.url ...
    broker.stop()
"""

import asyncio
import dataclasses
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from urllib.parse import urlsplit

__all__ = ["choose", "External", "Mosquitto", "Embedded", "BrokerError", "free_port",
           "find_mosquitto"]


class BrokerError(RuntimeError):
    """The broker could not be started or the URL is not an mqtt:// address."""


def free_port():
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_mosquitto():
    """Path of the mosquitto binary or None (Debian puts it in /usr/sbin, often not on PATH)."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None


def _wait_listening(port, timeout, alive=lambda: True):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    return False


class External:
    """A broker somebody else runs (`--broker mqtt://HOST:PORT`): used, never started or stopped."""

    kind = "external"

    def __init__(self, url):
        parts = urlsplit(url)
        if parts.scheme != "mqtt" or not parts.hostname:
            raise BrokerError("broker URL must look like mqtt://HOST:PORT, got %r" % url)
        self.host = parts.hostname
        self.port = parts.port or 1883
        self.url = "mqtt://%s:%d" % (self.host, self.port)

    def start(self):
        return self

    def stop(self):
        pass


class Mosquitto:
    """`mosquitto -c conf` on 127.0.0.1, anonymous, log in a file; start() again after stop()
    restarts it on the same port. With ``persistence`` on, persistent sessions and their queued
    QoS 1 messages survive a restart (what a consumer's session needs across a broker outage)."""

    kind = "mosquitto"

    def __init__(self, binary=None, workdir=None, port=None, persistence=False):
        self.binary = binary or find_mosquitto()
        if self.binary is None:
            raise BrokerError("mosquitto is not installed")
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.url = "mqtt://%s:%d" % (self.host, self.port)
        self.persistence = persistence
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="streetgrid-mosquitto-")
        self.workdir = str(workdir or self._tmp.name)
        self.conf = os.path.join(self.workdir, "mosquitto-%d.conf" % self.port)
        self.log = os.path.join(self.workdir, "mosquitto-%d.log" % self.port)
        self.proc = None

    def config_text(self):
        text = "listener %d 127.0.0.1\nallow_anonymous true\nlog_dest file %s\n" % (
            self.port, self.log)
        if self.persistence:
            text += "persistence true\npersistence_location %s/\nautosave_interval 1\n" % (
                self.workdir)
        else:
            text += "persistence false\n"
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # as root mosquitto drops to the "mosquitto" user, who cannot write a private temp
            # dir: no log, no persistence file, persistent sessions silently lost
            text += "user root\n"
        return text

    def start(self, timeout=10.0):
        with open(self.conf, "w") as f:
            f.write(self.config_text())
        self.proc = subprocess.Popen([self.binary, "-c", self.conf], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)  # the terminal's Ctrl-C is ours
        if not _wait_listening(self.port, timeout, lambda: self.proc.poll() is None):
            self.stop()
            raise BrokerError("mosquitto did not start listening on port %d" % self.port)
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


try:
    from amqtt.plugins.base import BaseAuthPlugin
except ImportError:  # amqtt is optional when mosquitto or --broker is used
    BaseAuthPlugin = None

if BaseAuthPlugin is not None:
    class OpenAuth(BaseAuthPlugin):
        """Accept every client as an ordinary (not anonymous) one: amqtt drops QoS 1 messages for
        offline persistent sessions of anonymous clients, but the gateway and its subscribers
        rely on clean_session=False keeping them, as mosquitto does."""

        @dataclasses.dataclass
        class Config:
            pass

        async def authenticate(self, *, session):
            return True


class Embedded:
    """An amqtt broker on its own asyncio loop in a daemon thread of this process."""

    kind = "amqtt"

    def __init__(self):
        self.host = "127.0.0.1"
        self.port = free_port()
        self.url = "mqtt://%s:%d" % (self.host, self.port)
        self._loop = None
        self._thread = None
        self._broker = None

    def start(self, timeout=10.0):
        try:
            from amqtt.broker import Broker
        except ImportError as exc:
            raise BrokerError("neither mosquitto nor amqtt is installed "
                              "(pip install amqtt)") from exc
        for name in ("amqtt", "transitions"):  # per-packet INFO chatter would drown the demo
            logging.getLogger(name).setLevel(logging.WARNING)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": "%s:%d" % (self.host, self.port)}},
            "plugins": {__name__ + ".OpenAuth": {}},
        }
        started = threading.Event()
        failure = []

        async def serve():
            try:
                self._broker = Broker(config)
                await self._broker.start()
            except Exception as exc:  # reported to the caller of start()
                failure.append(exc)
            finally:
                started.set()

        def run():
            asyncio.set_event_loop(self._loop)
            self._loop.create_task(serve())
            self._loop.run_forever()

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=run, name="amqtt-broker", daemon=True)
        self._thread.start()
        if not started.wait(timeout) or failure:  # start() returns once the socket listens
            self.stop()
            raise BrokerError("embedded amqtt broker did not start: %s" % (failure or "timeout"))
        return self

    def stop(self, timeout=10.0):
        if self._thread is None:
            return
        loop = self._loop
        if self._broker is not None and self._broker.transitions.state == "started":
            try:
                asyncio.run_coroutine_threadsafe(self._broker.shutdown(), loop).result(timeout)
            except Exception as exc:  # still stop the loop; the port dies with the thread
                logging.getLogger(__name__).warning("amqtt shutdown: %s", exc)

        async def drain():
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            loop.stop()

        asyncio.run_coroutine_threadsafe(drain(), loop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            loop.close()
        self._thread = None
        self._broker = None


def choose(url=None, prefer=("mosquitto", "amqtt")):
    """The broker for a demo run (not started yet): the given URL, else mosquitto, else amqtt."""
    if url:
        return External(url)
    for kind in prefer:
        if kind == "mosquitto" and find_mosquitto():
            return Mosquitto()
        if kind == "amqtt":
            return Embedded()
    raise BrokerError("no MQTT broker available: install mosquitto or amqtt, or pass --broker")
