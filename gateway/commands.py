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
(gateway/modbus_commands.py)::

    {"modbus": {"bus": "rs485-1", "address": 3}, "command": "relay", "fields": {"action": "open"}}

A command is checked completely before it is queued (:func:`parse_command`): the device must
be in the registry, the fields must encode, and the payload must fit the region's RX2 data
rate (51 bytes in EU868 and KR920) so it can be sent in either window.  A bad command is
logged with the reason and counted (``rejected``); it is never sent in part.  It then waits in
gateway.device_queue.DeviceQueue for the device's next uplink.
"""

from __future__ import annotations

import asyncio
import json
import logging

from gateway.device_queue import AppDownlink, DeviceQueue, DeviceQueueFull
from gateway.modbus_commands import (ModbusCommand, ModbusCommandError, parse_modbus_command,
                                     run_modbus_command)
from gateway.mqtt_link import MqttLink
from gateway.registry import Registry
from protocol import payload as _payload
from protocol.lorawan.region import Region

__all__ = ["CommandError", "parse_command", "CommandSubscriber", "command_topic"]

log = logging.getLogger(__name__)


class CommandError(ValueError):
    """The command cannot be queued; the message says why (one line)."""


def command_topic(prefix: str, site: str, gateway_id: str) -> str:
    return f"{prefix}{site}/{gateway_id}/commands"


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
    """paho subscriber (its own network thread) feeding ``queue`` on the asyncio loop.

    Counters: received, accepted, rejected, and for Modbus commands modbus_done /
    modbus_failed; ``subscribed`` says whether commands can arrive. ``modbus`` maps bus names
    to their BusPoller (the service sets it once the pollers exist).
    """

    def __init__(self, queue: DeviceQueue, registry: Registry, region: Region, topic: str,
                 link: MqttLink, client_id: str,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.queue, self.registry, self.region, self.topic = queue, registry, region, topic
        self.link, self.loop = link, loop
        self.counters = {"received": 0, "accepted": 0, "rejected": 0,
                         "modbus_done": 0, "modbus_failed": 0}
        self.modbus: dict = {}
        self._running: set = set()
        self.client = link.client(client_id)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect
        self.subscribed = False
        self.client.reconnect_delay_set(1, 60)

    def start(self) -> "CommandSubscriber":
        self.link.connect_async(self.client, keepalive=60)
        self.client.loop_start()
        return self

    def stop(self) -> None:
        try:
            self.client.disconnect()
        except Exception:  # pragma: no cover - best effort
            pass
        self.client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            client.subscribe(self.topic, qos=1)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        self.subscribed = not any(rc.is_failure for rc in reason_codes)
        if not self.subscribed:
            log.warning("subscribing to %s refused: %s", self.topic, reason_codes)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.subscribed = False

    def _on_message(self, client, userdata, msg) -> None:  # paho's thread
        try:
            obj = load_command(msg.payload)
            if "modbus" in obj:
                self.loop.call_soon_threadsafe(self._modbus_command, obj)
                return
            dev_eui, d = parse_command(obj, self.registry, self.region)
        except CommandError as exc:
            self.loop.call_soon_threadsafe(self._reject, str(exc))
            return
        self.loop.call_soon_threadsafe(self._accept, dev_eui, d)

    def _modbus_command(self, obj: dict) -> None:  # the event loop's thread (pollers live there)
        buses = {name: {m.cfg.address for m in p.meters} for name, p in self.modbus.items()}
        try:
            cmd = parse_modbus_command(obj, buses)
        except ModbusCommandError as exc:
            self._reject(str(exc))
            return
        self.counters["received"] += 1
        self.counters["accepted"] += 1
        log.info("modbus command %s for %s.%d queued on the bus", cmd.label, cmd.bus, cmd.address)
        task = self.loop.create_task(self._run_modbus(cmd))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run_modbus(self, cmd: ModbusCommand) -> None:
        ok = await run_modbus_command(self.modbus[cmd.bus], cmd)
        self.counters["modbus_done" if ok else "modbus_failed"] += 1

    def _reject(self, why: str) -> None:
        self.counters["received"] += 1
        self.counters["rejected"] += 1
        log.warning("command rejected: %s", why)

    def _accept(self, dev_eui: bytes, d: AppDownlink) -> None:  # the event loop's thread
        self.counters["received"] += 1
        try:
            n = self.queue.push(dev_eui, d)
        except DeviceQueueFull as exc:
            self.counters["rejected"] += 1
            log.warning("command %s rejected: %s", d.label, exc)
            return
        self.counters["accepted"] += 1
        log.info("command %s for %s queued (%d waiting); sent after its next uplink", d.label,
                 dev_eui.hex().upper(), n)
