"""Operator commands for devices, received over MQTT and queued as class-A downlinks.

Topic: ``<topic_prefix><site>/<gateway_id>/commands`` (QoS 1; the gateway subscribes with a
persistent session, client id ``<client_id>-commands``, so commands published while it
restarts are delivered when it is back).  Payload: one JSON object, either a named command of
the application payloads (``protocol.payload.encode_downlink`` with the device's kind from
the registry)::

    {"dev_eui": "70B3D57ED0001234", "command": "dim", "fields": {"seq": 7, "level": 50, "fade": 1.0}}

or raw bytes on an fPort (for tests and for payloads this gateway has no table for)::

    {"dev_eui": "70B3D57ED0001234", "fport": 50, "data": "0107320a00"}

or a command for a meter on a Modbus bus, run at once through that bus's poller
(gateway/modbus/commands.py)::

    {"modbus": {"bus": "rs485-1", "address": 3}, "command": "relay", "fields": {"action": "open"}}

Every command carries an ``id`` and, unless the config allows unsigned ones, an HMAC-SHA256
signature with a timestamp and a nonce (gateway/commands/auth.py; relay commands always). It
is checked completely before it is queued (:func:`parse_command`): the device must be in the
registry, the fields must encode, and the payload must fit the region's RX2 data rate (51
bytes in EU868 and KR920) so it can be sent in either window.  A bad or unauthorized command
is logged with the reason and counted (``rejected``, ``refused`` by reason); it is never sent
in part.  A good one is written to the command ledger (gateway/commands/ledger.py, survives a
restart) and waits in gateway.lorawan.device_queue.DeviceQueue for the device's next uplink.

Outcomes go to ``<topic_prefix><site>/<gateway_id>/command-results`` (QoS 1, JSON):
``accepted``, ``sent`` (the forwarder transmitted it), ``acknowledged`` (the device's ack
echoed its fPort and seq with result ok), ``failed`` (the device or the Modbus meter said no),
``expired`` (not acknowledged within ttl_s) and ``rejected``. All but ``rejected`` are kept in
the ledger's outbox until the broker acknowledges them; a rejection is published once, best
effort (it is in the log and the counters either way, and an unauthenticated flood must not
fill the disk).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time

from gateway.commands.auth import CommandGate, CommandRefused
from gateway.commands.ledger import CommandLedger, LedgerError
from gateway.lorawan.device_queue import AppDownlink, DeviceQueue
from gateway.modbus.commands import (ModbusCommand, ModbusCommandError, parse_modbus_command,
                                     run_modbus_command)
from gateway.backhaul.mqtt_link import MqttLink
from gateway.lorawan.registry import Registry
from protocol import payload as _payload
from protocol.lorawan.region import Region

__all__ = ["CommandError", "parse_command", "CommandSubscriber", "command_topic",
           "results_topic", "ENVELOPE"]

ENVELOPE = ("id", "ts", "nonce", "sig")  # the keys gateway.commands.auth reads; the rest is the command
MAX_RESULTS_INFLIGHT = 32

log = logging.getLogger(__name__)


class CommandError(ValueError):
    """The command cannot be queued; the message says why (one line)."""


def command_topic(prefix: str, site: str, gateway_id: str) -> str:
    return f"{prefix}{site}/{gateway_id}/commands"


def results_topic(prefix: str, site: str, gateway_id: str) -> str:
    return f"{prefix}{site}/{gateway_id}/command-results"


def downlink_seq(d: AppDownlink) -> int | None:
    """The seq a device will echo in its ack for this downlink (every named downlink of
    protocol/payload has one), or None for bytes no table decodes."""
    try:
        return _payload.decode_downlink(d.fport, d.payload)["fields"].get("seq")
    except _payload.PayloadError:
        return None


def load_command(body: bytes | str) -> dict:
    """The command's JSON object; CommandError if it is not one."""
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CommandError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise CommandError("not a JSON object")
    return obj


def parse_command(body: bytes | str | dict, registry: Registry,
                  region: Region) -> tuple[bytes, AppDownlink]:
    """JSON command (text or already loaded) -> (DevEUI, AppDownlink); CommandError for
    anything unusable."""
    obj = body if isinstance(body, dict) else load_command(body)
    eui = obj.get("dev_eui")
    dev = registry.get(eui) if isinstance(eui, str) else None
    if dev is None:
        raise CommandError(f"dev_eui {eui!r} is not in the registry")
    if "command" in obj:
        extra = set(obj) - {"dev_eui", "command", "fields"}
        fields = obj.get("fields", {})
        if extra or not isinstance(obj["command"], str) or not isinstance(fields, dict):
            raise CommandError('expected {"dev_eui", "command": str, "fields": {...}}')
        try:
            fport, data = _payload.encode_downlink(dev.kind, obj["command"], fields)
        except (_payload.PayloadError, TypeError, ValueError) as exc:
            raise CommandError(f"{obj['command']}: {exc}") from None
        label = obj["command"]
    elif "fport" in obj:
        extra = set(obj) - {"dev_eui", "fport", "data"}
        fport, hexdata = obj["fport"], obj.get("data")
        if extra or type(fport) is not int or not isinstance(hexdata, str):
            raise CommandError('expected {"dev_eui", "fport": int, "data": "hex"}')
        if not 1 <= fport <= 223:
            raise CommandError(f"fport must be 1..223, got {fport}")
        try:
            data = bytes.fromhex(hexdata)
        except ValueError:
            raise CommandError("data is not hex") from None
        label = f"fport {fport}"
    else:
        raise CommandError('needs "command" (with "fields") or "fport" (with "data")')
    limit = region.max_payload(region.rx2_dr)
    if len(data) > limit:
        raise CommandError(f"{label}: {len(data)} bytes do not fit the RX2 data rate ({limit} bytes)")
    return dev.dev_eui, AppDownlink(fport, bytes(data), label)


class CommandSubscriber:
    """paho subscriber (its own network thread) handing each command to the event loop, where
    it is authorized (``gate``), parsed, written to the ``ledger`` and queued.

    Counters: received, accepted, rejected, refused (by reason), sent, acknowledged, failed,
    expired, results_published; for Modbus commands modbus_done / modbus_failed;
    ``subscribed`` says whether commands can arrive. ``modbus`` maps bus names to their
    BusPoller (the service sets it once the pollers exist).
    """

    def __init__(self, queue: DeviceQueue, registry: Registry, region: Region, topic: str,
                 link: MqttLink, client_id: str, loop: asyncio.AbstractEventLoop, *,
                 gate: CommandGate, ledger: CommandLedger, result_topic: str,
                 ttl_s: float = 86400.0, clock=time.time) -> None:
        self.queue, self.registry, self.region, self.topic = queue, registry, region, topic
        self.link, self.loop, self.gate, self.ledger = link, loop, gate, ledger
        self.result_topic, self.ttl_s, self.clock = result_topic, ttl_s, clock
        self.counters = {"received": 0, "accepted": 0, "rejected": 0, "sent": 0,
                         "acknowledged": 0, "failed": 0, "expired": 0, "results_published": 0,
                         "modbus_done": 0, "modbus_failed": 0, "ledger_errors": 0}
        self.refused: dict[str, int] = {}
        self.modbus: dict = {}
        self._running: set = set()
        # outbox rows published, PUBACK not yet: paho mid -> oid, under _lock (both threads);
        # _early: PUBACKs that came before publish() returned its mid to us
        self._lock = threading.Lock()
        self._results_inflight: dict[int, int] = {}
        self._early: set[int] = set()
        self._outbox_sending: set[int] = set()  # the same oids (loop thread)
        self.client = link.client(client_id)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.subscribed = False
        self.connected = False
        self.client.reconnect_delay_set(1, 60)
        queue.on_sent = self._sent

    def start(self) -> "CommandSubscriber":
        """Queue again what the ledger still holds (accepted before a restart), then connect."""
        restored = self.ledger.waiting()
        for e in restored:
            self.queue.restore(e.dev_eui, e.app)
        if restored:
            log.info("%d command(s) accepted before the restart wait for their devices again",
                     len(restored))
        self.link.connect_async(self.client, keepalive=60)
        self.client.loop_start()
        return self

    def stop(self) -> None:
        try:
            self.client.disconnect()
        except Exception:  # pragma: no cover - best effort
            pass
        self.client.loop_stop()

    def stats(self) -> dict:
        try:
            held = self.ledger.counts()
            outbox = self.ledger.outbox_size()
        except Exception:  # noqa: BLE001 - stats must not fail on a broken file
            held, outbox = {}, None
        return dict(self.counters, refused=dict(self.refused), subscribed=self.subscribed,
                    outbox=outbox, awaiting_ack=held.get("sent", 0))

    # ---- paho's thread -----------------------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            return  # the publisher, on the same settings, names the reason
        client.subscribe(self.topic, qos=1)
        self.connected = True
        self.loop.call_soon_threadsafe(self._publish_outbox)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        self.subscribed = not any(rc.is_failure for rc in reason_codes)
        if not self.subscribed:
            log.warning("subscribing to %s refused: %s", self.topic, reason_codes)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        # results in flight stay in flight: paho sends them again in the persistent session
        self.subscribed = self.connected = False

    def _on_message(self, client, userdata, msg) -> None:
        self.loop.call_soon_threadsafe(self._handle, msg.payload)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._lock:
            oid = self._results_inflight.pop(mid, None)
            if oid is None:
                self._early.add(mid)
                return
        self.loop.call_soon_threadsafe(self._delivered, oid,
                                       not getattr(reason_code, "is_failure", False))

    # ---- the event loop's thread -------------------------------------------------------------

    def _handle(self, body: bytes) -> None:
        self.counters["received"] += 1
        try:
            obj = load_command(body)
        except CommandError as exc:
            self._reject(None, "invalid", str(exc))
            return
        cid = obj.get("id") if isinstance(obj.get("id"), str) else None
        try:
            self.gate.check(obj, self.clock())
        except CommandRefused as exc:
            self._reject(cid if exc.reason != "no-id" else None, exc.reason, str(exc))
            return
        except LedgerError as exc:
            self.counters["ledger_errors"] += 1
            self._reject(cid, "ledger-error", str(exc))
            return
        cmd = {k: v for k, v in obj.items() if k not in ENVELOPE}
        if "modbus" in cmd:
            self._modbus_command(cid, cmd)
            return
        try:
            dev_eui, d = parse_command(cmd, self.registry, self.region)
        except CommandError as exc:
            self._reject(cid, "invalid", str(exc))
            return
        if self.queue.pending(dev_eui) >= self.queue.max_per_device:
            self.queue.counters["refused"] += 1
            self._reject(cid, "queue-full", "%s already has %d commands waiting"
                         % (dev_eui.hex().upper(), self.queue.pending(dev_eui)))
            return
        try:
            d = self.ledger.accept(cid, dev_eui, d, downlink_seq(d), self.clock(), self.ttl_s)
        except LedgerError as exc:
            self.counters["ledger_errors"] += 1
            self._reject(cid, "ledger-error", str(exc))
            return
        n = self.queue.push(dev_eui, d)
        self.counters["accepted"] += 1
        log.info("command %s (%s) for %s accepted (%d waiting); sent after its next uplink",
                 cid, d.label, dev_eui.hex().upper(), n)
        self._result(cid, "accepted", dev_eui=dev_eui.hex().upper(), command=d.label)

    def _modbus_command(self, cid: str, obj: dict) -> None:  # pollers live on the loop
        buses = {name: {m.cfg.address for m in p.meters} for name, p in self.modbus.items()}
        try:
            cmd = parse_modbus_command(obj, buses)
        except ModbusCommandError as exc:
            self._reject(cid, "invalid", str(exc))
            return
        self.counters["accepted"] += 1
        log.info("modbus command %s (%s) for %s.%d queued on the bus", cid, cmd.label, cmd.bus,
                 cmd.address)
        where = {"modbus": {"bus": cmd.bus, "address": cmd.address}, "command": cmd.label}
        self._result(cid, "accepted", **where)
        task = self.loop.create_task(self._run_modbus(cid, cmd, where))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run_modbus(self, cid: str, cmd: ModbusCommand, where: dict) -> None:
        why = await run_modbus_command(self.modbus[cmd.bus], cmd)
        self.counters["modbus_done" if why is None else "modbus_failed"] += 1
        if why is None:
            self.counters["acknowledged"] += 1
            self._result(cid, "acknowledged", **where)
        else:
            self.counters["failed"] += 1
            self._result(cid, "failed", reason=why, **where)

    def _reject(self, cid: str | None, reason: str, why: str) -> None:
        self.counters["rejected"] += 1
        self.refused[reason] = self.refused.get(reason, 0) + 1
        log.warning("command %s rejected (%s): %s", cid or "without id", reason, why)
        body = json.dumps({"id": cid, "status": "rejected", "reason": reason, "detail": why,
                           "ts": int(self.clock())})
        if self.connected:  # best effort, not in the outbox (see the module docstring)
            self.client.publish(self.result_topic, body, qos=1)
            self.counters["results_published"] += 1

    def _sent(self, dev_eui: bytes, d: AppDownlink) -> None:  # DeviceQueue.on_sent
        if d.ref is None:
            return
        e = self._ledger(self.ledger.mark_sent, d.ref)
        if e is None:
            return
        self.counters["sent"] += 1
        self._result(e.id, "sent", dev_eui=dev_eui.hex().upper(), command=d.label,
                     **({} if e.dl_seq is not None else {"detail": "no seq: no ack to wait for"}))

    def device_ack(self, dev_eui: bytes, port: int, seq: int, result: str) -> None:
        """The device's ack uplink (fPort 12 or 22): close the command it answers."""
        e = self._ledger(self.ledger.acked, dev_eui, port, seq)
        if e is None:
            return
        where = dict(dev_eui=dev_eui.hex().upper(), command=e.app.label)
        if result == "ok":
            self.counters["acknowledged"] += 1
            self._result(e.id, "acknowledged", **where)
        else:
            self.counters["failed"] += 1
            log.warning("command %s (%s) for %s: the device answered %s", e.id, e.app.label,
                        where["dev_eui"], result)
            self._result(e.id, "failed", reason=result, **where)

    def expire(self) -> None:
        """Close the commands past ttl_s (called every second by the service)."""
        for e in self._ledger(self.ledger.expire, self.clock()) or ():
            waiting = self.queue.drop(e.dev_eui, e.ref)
            self.counters["expired"] += 1
            why = ("never sent: no uplink from the device" if e.state == "waiting"
                   else "sent, but the device never acknowledged it")
            log.warning("command %s (%s) for %s expired: %s", e.id, e.app.label,
                        e.dev_eui.hex().upper(), why)
            extra = {"detail": "was in flight"} if e.state == "waiting" and not waiting else {}
            self._result(e.id, "expired", reason=why, dev_eui=e.dev_eui.hex().upper(),
                         command=e.app.label, **extra)

    def _ledger(self, op, *args):
        try:
            return op(*args)
        except LedgerError as exc:
            self.counters["ledger_errors"] += 1
            log.error("%s", exc)
            return None

    def _result(self, cid: str, status: str, **extra) -> None:
        body = json.dumps(dict({"id": cid, "status": status, "ts": int(self.clock())}, **extra))
        if self._ledger(self.ledger.add_result, body) is not None:
            self._publish_outbox()

    def _publish_outbox(self) -> None:
        if not self.connected:
            return
        try:
            rows = self.ledger.results(limit=MAX_RESULTS_INFLIGHT)
        except LedgerError:
            return
        for oid, body in rows:
            if oid in self._outbox_sending or len(self._outbox_sending) >= MAX_RESULTS_INFLIGHT:
                continue
            info = self.client.publish(self.result_topic, body, qos=1)
            self._outbox_sending.add(oid)
            with self._lock:  # not around publish(): paho calls on_publish holding its mutex
                early = info.mid in self._early
                if early:
                    self._early.discard(info.mid)
                else:
                    self._results_inflight[info.mid] = oid
            if early:
                self.loop.call_soon(self._delivered, oid, True)

    def _delivered(self, oid: int, ok: bool) -> None:
        """The broker answered result ``oid``: delete it, or (refused: an ACL) keep it for the
        next connect."""
        if ok:
            self._outbox_sending.discard(oid)
            self._ledger(self.ledger.result_delivered, oid)
            self.counters["results_published"] += 1
            self._publish_outbox()
        else:
            log.error("the broker refused a command result on %s (its ACL?); kept for the "
                      "next connection", self.result_topic)
