"""The gateway service: one asyncio process wiring the parts of gateway/ together.

    packet forwarders --UDP--> ForwarderServer --Result--> readings.uplink_item --> Intake
        --> RecordQueue (SQLite) --> Publisher (paho thread) --QoS 1--> MQTT broker
    MQTT .../commands --> CommandSubscriber --> DeviceQueue --> ForwarderServer (class-A reply)

Files in ``data_dir``: ``sessions.db`` (SessionStore), ``queue.db`` (RecordQueue),
``stats.json`` (every counter, rewritten atomically every ``stats_interval_s`` and at
shutdown; a one-line summary goes to the log at the same time).

Lifecycle of :meth:`GatewayService.run`: open the registry and the stores, start the
publisher, bind the UDP socket, write the ready file (JSON ``{"udp_host", "udp_port",
"pid"}``, atomically: its existence means forwarders may send), then serve until ``stop()``
(SIGINT/SIGTERM in :func:`main`).  Shutdown: stop taking datagrams, move held items into the
queue if it has room (what cannot be stored is logged as lost), write the final stats, stop
the publisher (unacknowledged records stay in the queue for the next start), close the
stores, remove the ready file.  Everything needed after a restart (sessions, frame counters,
queued records, the batch sequence) is in the two SQLite files, committed before use, so a
SIGKILL loses at most held (backlog) items and uplinks being processed at that instant.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import signal
import sys
import time

from gateway import log_format
from gateway.commands.auth import CommandGate
from gateway.commands.ledger import CommandLedger, LedgerError
from gateway.chirpstack.downlinks import ChirpStackDownlinks
from gateway.chirpstack.source import ChirpStackSource
from gateway.commands.subscriber import CommandSubscriber, command_topic, results_topic
from gateway.config import Config, ConfigError, load_config
from gateway.lorawan.device_queue import DeviceQueue
from gateway.lorawan.forwarders import ForwarderServer
from gateway.backhaul.intake import Intake
from gateway.modbus.poller import BusPoller
from gateway.operations.http_server import OperatorHttp
from gateway.backhaul.publisher import Publisher
from gateway.lorawan.readings import uplink_item
from gateway.lorawan.registry import RegistryError, load_registry
from gateway.lorawan.sessions import SessionError, SessionStore
from gateway.operations.stats import summary_line, write_json_atomic
from gateway.backhaul.store import QueueError, Record, RecordQueue
from gateway.lorawan.uplink import Result
from protocol.lorawan.region import region as get_region

__all__ = ["GatewayService", "main", "STATS_FILE"]

log = logging.getLogger("gateway")

STATS_FILE = "stats.json"
RETRY_INTERVAL_S = 1.0
GC_THRESHOLDS = (700, 10, 1000)  # CPython's default: (700, 10, 10); see _tune_gc


class GatewayService:
    """See the module docstring.  Construct, then ``await run(ready_file)``; ``stop()`` ends it."""

    def __init__(self, cfg: Config, *, tune_gc: bool = False) -> None:
        self.cfg = cfg
        self.tune_gc = tune_gc  # main(): the process is ours (see _tune_gc)
        self.region = get_region(cfg.region)
        self.counters = {"items": 0, "time_fallback": 0, "payload_errors": 0}
        self.started = time.time()
        self.server: ForwarderServer | None = None
        self.publisher: Publisher | None = None
        self.intake: Intake | None = None
        self.queue: RecordQueue | None = None
        self.sessions: SessionStore | None = None
        self.device_queue = DeviceQueue()
        self.commands: CommandSubscriber | None = None
        self.chirpstack: ChirpStackSource | None = None  # [chirpstack]: its events, our records
        self.ledger: CommandLedger | None = None
        self.modbus: list[BusPoller] = []
        self.http: OperatorHttp | None = None
        self._modbus_tasks: dict[str, asyncio.Task] = {}
        self.reloads = {"ok": 0, "refused": 0}  # SIGHUP: reload()
        self._stop = asyncio.Event()  # binds to the running loop on first use (3.10+)
        self._pending: list[bytes] = []
        self.stats_path = os.path.join(cfg.data_dir, STATS_FILE)

    # ---- data path -----------------------------------------------------------------------

    def on_records(self, r: Result) -> None:
        """ForwarderServer callback: one accepted (or payload-error) uplink -> one item.

        Items are collected and stored by :meth:`flush`, which the server calls once per
        release before it replies to any of them (so an ACK never precedes the durable record);
        all uplinks the dedup releases together share one transaction (one fsync). A flush is
        also scheduled right after the current event-loop step, for callers that do not."""
        item, fallback = uplink_item(r, self.region, time.time(), self.cfg.time_source)
        if fallback:
            self.counters["time_fallback"] += 1
        if not r.accepted:
            self.counters["payload_errors"] += 1
        elif r.message == "ack":
            self._device_ack(r.dev_eui, r.records)
        self.counters["items"] += 1
        self._pending.append(item)
        if len(self._pending) == 1:
            asyncio.get_running_loop().call_soon(self.flush)

    def _device_ack(self, dev_eui: bytes, records: list[dict]) -> None:
        """A device's ack uplink (ours or through ChirpStack) closes the command it answers."""
        if self.commands is None:
            return
        f = {rec.get("n"): rec.get("v", rec.get("vs")) for rec in records}
        if isinstance(f.get("port"), int) and isinstance(f.get("seq"), int):
            self.commands.device_ack(dev_eui, f["port"], f["seq"], f.get("result"))

    def flush(self) -> None:
        """Store the items collected by on_records (in order) through the intake."""
        items, self._pending = self._pending, []
        if items:
            self.intake.put_many(items)

    # ---- stats ---------------------------------------------------------------------------

    def snapshot(self) -> dict:
        now_mono = time.monotonic()
        srv, pub = self.server, self.publisher
        q = {}
        try:
            qs = self.queue.stats()
            q = {"records": qs.records, "used_bytes": qs.used_bytes, "max_bytes": qs.max_bytes,
                 "file_bytes": qs.file_bytes,
                 "oldest_age_s": (round(max(0.0, time.time() - qs.oldest_created), 3)
                                  if qs.oldest_created is not None else 0.0)}
        except QueueError as exc:
            q = {"error": str(exc)}
        return {
            "gateway_id": self.cfg.gateway_id,
            "site": self.cfg.site,
            "time": round(time.time(), 3),
            "uptime_s": round(time.time() - self.started, 3),
            "udp": {"host": self.cfg.udp_host, "port": srv.port, "rcvbuf": srv.rcvbuf},
            "forwarder_server": dict(srv.counters),
            "uplink": dict(srv.processor.counters),
            "dedup": dict(srv.dedup.counters, open=len(srv.dedup)),
            "downlinks_pending": len(srv.downlinks),
            "forwarders": {eui: {"addr": "%s:%s" % tuple(info.addr[:2]),
                                 "last_pull_s": round(now_mono - info.last_seen, 3),
                                 "rx": srv.packets.get(eui, (0, 0))[0],
                                 "tx": srv.packets.get(eui, (0, 0))[1]}
                           for eui, info in sorted(srv.forwarders.items())},
            "records": dict(self.counters),
            "intake": dict(self.intake.counters, backlog=len(self.intake)),
            "publisher": dict(pub.counters, connected=pub.connected, inflight=pub.inflight,
                              broker=pub.link.url, last_error=pub.last_error,
                              latency=pub.latency.snapshot()),
            "commands": dict({k: v for k, v in self.device_queue.counters.items()
                              if k not in ("queued", "sent")},
                             **self.commands.stats(), waiting=len(self.device_queue)),
            "queue": q,
            "modbus": {p.cfg.name: p.stats() for p in self.modbus},
            "chirpstack": self.chirpstack.stats() if self.chirpstack is not None else {},
            "reloads": dict(self.reloads),
            "http": dict(self.http.counters) if self.http is not None else {},
            "devices": self.server.activity.snapshot(),
            "rejections": list(self.server.rejections.recent),
        }

    def write_stats(self) -> dict:
        s = self.snapshot()
        try:
            write_json_atomic(self.stats_path, s)
        except OSError as exc:
            log.error("cannot write %s: %s", self.stats_path, exc)
        log.info("%s", summary_line(s))
        return s

    def _store_modbus(self, items) -> None:
        """BusPoller sink (runs in a worker thread): one transaction per batch of polls; a
        QueueFull propagates so the poller keeps the items and retries."""
        self.queue.put([Record(bytes(i), "modbus") for i in items])
        self.publisher.notify()

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.stats_interval_s)
            self.write_stats()

    async def _retry_loop(self) -> None:
        while True:
            await asyncio.sleep(RETRY_INTERVAL_S)
            if len(self.intake):
                self.intake.retry()
            if self.commands is not None:
                self.commands.expire()
            if self.chirpstack is not None:  # handed over once its broker is back
                self.chirpstack.downlinks.drain_all()

    # ---- lifecycle -----------------------------------------------------------------------

    # ---- reload (SIGHUP) ------------------------------------------------------------------

    def _start_poller(self, poller: BusPoller) -> None:
        self._modbus_tasks[poller.cfg.name] = asyncio.create_task(
            poller.run(), name=f"modbus-{poller.cfg.name}")

    async def reload(self) -> None:
        """SIGHUP: read the device registry and the config's Modbus bus table again, without a
        restart. A file with errors changes nothing: the old one keeps running and every error
        is logged. New registry: joins, uplinks and commands use it from the next frame; a
        device taken out of it is refused (its session stays on disk). A bus whose settings
        changed is restarted, a removed one stopped, a new one started; the others keep
        polling. Other config keys take effect at the next restart (logged)."""
        try:
            registry = load_registry(self.cfg.registry)
        except RegistryError as exc:
            self.reloads["refused"] += 1
            log.error("reload: %s; the registry in use (%d devices) stays", exc,
                      len(self.server.registry))
            registry = None
        try:
            cfg = load_config(self.cfg.path)
        except ConfigError as exc:
            self.reloads["refused"] += 1
            log.error("reload: %s; the Modbus buses in use stay", exc)
            cfg = None
        if registry is not None:
            old = len(self.server.registry)
            self.server.registry = self.server.processor.registry = registry
            self.commands.registry = registry
            if self.chirpstack is not None:
                self.chirpstack.registry = registry
            self.reloads["ok"] += 1
            log.info("reload: registry %s: %d devices (was %d)", self.cfg.registry,
                     len(registry), old)
        if cfg is not None:
            await self._reload_buses(cfg)
            later = [k for k in Config.__dataclass_fields__
                     if k != "modbus_buses" and getattr(cfg, k) != getattr(self.cfg, k)]
            if later:
                log.warning("reload: %s changed in %s: takes effect at the next restart",
                            ", ".join(later), cfg.path)

    async def _reload_buses(self, cfg: Config) -> None:
        new = {b.name: b for b in cfg.modbus_buses}
        kept = []
        for poller in self.modbus:
            if new.get(poller.cfg.name) == poller.cfg:
                kept.append(poller)
                del new[poller.cfg.name]
                continue
            task = self._modbus_tasks.pop(poller.cfg.name)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            log.info("reload: Modbus bus %s %s", poller.cfg.name,
                     "restarted with its new settings" if poller.cfg.name in new else "stopped")
        for bus in cfg.modbus_buses:
            if bus.name in new:
                poller = BusPoller(bus, self._store_modbus)
                kept.append(poller)
                self._start_poller(poller)
                if not any(p.cfg.name == bus.name for p in self.modbus):
                    log.info("reload: Modbus bus %s started", bus.name)
        self.modbus = kept
        self.commands.modbus = {p.cfg.name: p for p in self.modbus}
        self.cfg = dataclasses.replace(self.cfg, modbus_buses=cfg.modbus_buses)

    def stop(self) -> None:
        """Ask run() to shut down (also before it is serving: it then stops right away)."""
        self._stop.set()

    async def run(self, ready_file: str | None = None) -> None:
        cfg = self.cfg
        registry = load_registry(cfg.registry)
        os.makedirs(cfg.data_dir, exist_ok=True)
        self.sessions = SessionStore.for_net_id(os.path.join(cfg.data_dir, "sessions.db"), cfg.net_id)
        tasks: list[asyncio.Task] = []
        try:
            self.queue = RecordQueue(os.path.join(cfg.data_dir, "queue.db"),
                                     max_bytes=cfg.queue_max_bytes)
            self.publisher = Publisher(
                self.queue, gateway_id=cfg.gateway_id, site=cfg.site, link=cfg.mqtt,
                client_id=cfg.client_id, topic_prefix=cfg.topic_prefix,
                max_batch_bytes=cfg.max_batch_bytes, max_batch_records=cfg.max_batch_records,
                max_batch_age_s=cfg.max_batch_age_s)
            self.intake = Intake(_KindQueue(self.queue), cfg.backlog_records, self.publisher.notify)
            self.server = ForwarderServer(registry, self.sessions, self.region, cfg.net_id,
                                          self.on_records, cfg.udp_host, cfg.udp_port,
                                          cfg.dedup_window_s, cfg.rx1_margin_s,
                                          cfg.udp_rcvbuf_bytes)
            self.server.app_downlinks = self.device_queue
            self.server.flush_records = self.flush  # durable before the ACKs leave
            self.ledger = CommandLedger(os.path.join(cfg.data_dir, "commands.db"))
            gate = CommandGate(cfg.command_key, self.ledger,
                               allow_unsigned=cfg.commands_allow_unsigned,
                               max_skew_s=cfg.commands_max_skew_s)
            self.commands = CommandSubscriber(
                self.device_queue, registry, self.region,
                command_topic(cfg.topic_prefix, cfg.site, cfg.gateway_id), cfg.mqtt,
                cfg.client_id + "-commands", asyncio.get_running_loop(), gate=gate,
                ledger=self.ledger,
                result_topic=results_topic(cfg.topic_prefix, cfg.site, cfg.gateway_id),
                ttl_s=cfg.commands_ttl_s)
            log.info("commands: %s", gate.describe())
            for bus in cfg.modbus_buses:  # polls stored via the same durable queue
                self.modbus.append(BusPoller(bus, self._store_modbus))
            self.commands.modbus = {p.cfg.name: p for p in self.modbus}
            if self.tune_gc:
                _tune_gc()
            if cfg.chirpstack is not None:
                downlinks = ChirpStackDownlinks(self.device_queue, cfg.gateway_id,
                                                lambda t, b: self.chirpstack.publish(t, b))
                self.device_queue.on_push = downlinks.drain
                self.chirpstack = ChirpStackSource(
                    cfg.chirpstack, cfg.chirpstack_client_id, cfg.chirpstack_application,
                    registry, self.intake.put, asyncio.get_running_loop(), downlinks=downlinks,
                    on_device_ack=self._device_ack)
            self.publisher.start()
            self.commands.start()
            if self.chirpstack is not None:
                self.chirpstack.start()
            port = await self.server.start()
            log.info("gateway %s (site %s, %s, %d devices) serving GWMP on %s:%d, MQTT %s; "
                     "%d records queued", cfg.gateway_id, cfg.site, cfg.region, len(registry),
                     cfg.udp_host, port, cfg.mqtt.describe(), self.queue.stats().records)
            http_port = None
            if cfg.http_host is not None:
                self.http = OperatorHttp(cfg.http_host, cfg.http_port)
                http_port = self.http.start(asyncio.get_running_loop(), self.snapshot)
                if http_port is not None:
                    log.info("status page on http://%s:%d/ (and /metrics, /healthz, /readyz)",
                             cfg.http_host, http_port)
            if ready_file:
                write_json_atomic(ready_file, {"udp_host": cfg.udp_host, "udp_port": port,
                                               "http_port": http_port, "pid": os.getpid()})
            tasks = [asyncio.create_task(self._stats_loop()),
                     asyncio.create_task(self._retry_loop())]
            for poller in self.modbus:
                self._start_poller(poller)
            await self._stop.wait()
            log.info("shutting down")
        finally:
            tasks += self._modbus_tasks.values()
            for t in tasks:
                t.cancel()
            for t in tasks:
                try:
                    await t
                except asyncio.CancelledError:
                    pass
            await self._shutdown(ready_file)

    async def _shutdown(self, ready_file: str | None) -> None:
        if self.http is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.http.stop)
        if self.chirpstack is not None:  # no new events; unacked ones the broker redelivers
            await asyncio.get_running_loop().run_in_executor(None, self.chirpstack.stop)
        if self.server is not None:
            await self.server.stop()
        if self.intake is not None:
            self.flush()
        if self.intake is not None and len(self.intake):
            self.intake.retry()
            if len(self.intake):
                log.error("ACCEPTED DATA LOST: %d held items could not be stored at shutdown",
                          len(self.intake))
        if self.server is not None and self.queue is not None:
            self.write_stats()
        if self.commands is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.commands.stop)
        if self.publisher is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.publisher.stop)
        for store in (self.queue, self.sessions, self.ledger):
            if store is not None:
                store.close()
        if ready_file:
            try:
                os.unlink(ready_file)
            except OSError:
                pass


def _tune_gc() -> None:
    """Garbage-collector settings for the service process, applied once the stores are loaded.

    Its full collections stalled the event loop (and, holding the GIL, every thread) ~50 ms
    every ~1.5 s at 5,000 uplinks/s and found nothing: the data path makes no cycles, only
    long-lived objects (session cache entries, dedup and retransmission memory). So what
    startup loaded (registry, session cache) is frozen out of the GC and full collections are
    made 100x rarer; young collections still run as often and reclaim any young cycles."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class _KindQueue:
    """Tags the items the intake stores as LoRaWAN records (the queue's ``kind`` column)."""

    def __init__(self, queue: RecordQueue) -> None:
        self._queue = queue

    def put(self, items) -> list[int]:
        return self._queue.put([Record(bytes(i), "lorawan") for i in items])


def check_config(config_path: str) -> int:
    """``python -m gateway run --check-config``: the config file and the registry it names,
    read and validated as a start would, without starting anything (for an operator before a
    restart, and the systemd unit's ExecStartPre). 0 and a summary, or 2 and every error."""
    try:
        cfg = load_config(config_path)
        registry = load_registry(cfg.registry)
    except (ConfigError, RegistryError) as exc:
        print("gateway: %s" % exc, file=sys.stderr)
        return 2
    print("gateway: config %s OK: gateway %s (site %s, %s), %d devices in %s, %d Modbus bus%s, "
          "data in %s" % (cfg.path, cfg.gateway_id, cfg.site, cfg.region, len(registry),
                          cfg.registry, len(cfg.modbus_buses),
                          "" if len(cfg.modbus_buses) == 1 else "es", cfg.data_dir))
    print("gateway: commands: %s" % CommandGate(
        cfg.command_key, None, allow_unsigned=cfg.commands_allow_unsigned,
        max_skew_s=cfg.commands_max_skew_s).describe())
    return 0


def main(config_path: str, ready_file: str | None = None) -> int:
    """``python -m gateway run``: exit status 0 after a clean shutdown, 2 for a bad config or
    registry, 1 when the gateway cannot start or fails."""
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        print("gateway: %s" % exc, file=sys.stderr)
        return 2
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(log_format.formatter(cfg.log_format))
    logging.basicConfig(level=getattr(logging, cfg.log_level), handlers=[handler])
    if cfg.log_level != "DEBUG":
        # pymodbus logs every unanswered request at ERROR: one dead meter would flood the log.
        # The poller counts those (stats.json modbus) and logs what an operator must act on.
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    service = GatewayService(cfg, tune_gc=True)

    async def amain() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, service.stop)
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(service.reload()))
        await service.run(ready_file)

    try:
        asyncio.run(amain())
    except RegistryError as exc:
        print("gateway: %s" % exc, file=sys.stderr)
        return 2
    except (SessionError, QueueError, LedgerError, OSError) as exc:
        print("gateway: cannot run: %s" % exc, file=sys.stderr)
        return 1
    return 0
