"""Operator commands for ChirpStack-managed devices: out on ChirpStack's ``command/down`` topic.

A command is accepted, signed-checked and written to the ledger exactly as for our own devices
and waits in the DeviceQueue.  A device is ChirpStack's once an event of it came through the
ChirpStack source (which tells us its application); from then on its waiting downlinks are
handed to ChirpStack instead of our forwarders, as
``application/<app>/device/<DevEUI>/command/down`` with
``{"id", "devEui", "confirmed": false, "fPort", "data"}`` (QoS 1).  ChirpStack queues it and
sends it after the device's next uplink; its ``txack`` event (queueItemId = our ``id``) marks
the command sent, and the device's own ack uplink acknowledges it, as for our devices.

The ``id`` is a UUID derived from the gateway id and the ledger row, so a command handed over
again after a restart carries the same id.  Until a device is heard through ChirpStack after a
restart its commands wait in the DeviceQueue (the ledger has them either way).
"""

from __future__ import annotations

import base64
import json
import logging
import uuid

from gateway.lorawan.device_queue import AppDownlink, DeviceQueue

__all__ = ["ChirpStackDownlinks", "down_topic", "down_command"]

log = logging.getLogger(__name__)

MAX_HANDED = 4096
_NAMESPACE = uuid.UUID("6f1f5b3e-8f0a-4c59-9a57-3c1f2b5d7e11")


def down_topic(application_id: str, dev_eui: bytes) -> str:
    return f"application/{application_id}/device/{dev_eui.hex()}/command/down"


def down_command(item_id: str, dev_eui: bytes, d: AppDownlink) -> bytes:
    return json.dumps({"id": item_id, "devEui": dev_eui.hex(), "confirmed": False,
                       "fPort": d.fport, "data": base64.b64encode(d.payload).decode()},
                      separators=(",", ":")).encode()


class ChirpStackDownlinks:
    """``publish(topic, body) -> bool`` sends on ChirpStack's broker (False: not connected)."""

    def __init__(self, queue: DeviceQueue, gateway_id: str, publish) -> None:
        self.queue = queue
        self.gateway_id = gateway_id
        self.publish = publish
        self.apps: dict[bytes, str] = {}  # DevEUI -> ChirpStack application id, once heard
        self.handed: dict[str, tuple[bytes, AppDownlink]] = {}  # item id -> waiting for txack
        self.counters = {"handed_over": 0, "tx_acked": 0, "publish_failures": 0}

    def item_id(self, dev_eui: bytes, d: AppDownlink) -> str:
        ref = d.ref if d.ref is not None else "%s:%d:%s" % (dev_eui.hex(), d.fport, d.payload.hex())
        return str(uuid.uuid5(_NAMESPACE, f"{self.gateway_id}:{ref}"))

    def heard(self, dev_eui: bytes, application_id: str) -> None:
        """An event of the device came through ChirpStack: it is ChirpStack's; hand over."""
        self.apps[bytes(dev_eui)] = application_id
        self.drain(dev_eui)

    def drain(self, dev_eui: bytes) -> None:
        """Hand the device's waiting downlinks to ChirpStack (if it is ChirpStack's)."""
        app = self.apps.get(bytes(dev_eui))
        if app is None:
            return
        while (d := self.queue.pop(dev_eui)) is not None:
            iid = self.item_id(dev_eui, d)
            if not self.publish(down_topic(app, dev_eui), down_command(iid, dev_eui, d)):
                self.queue.push_front(dev_eui, d)
                self.counters["publish_failures"] += 1
                return
            self.handed[iid] = (bytes(dev_eui), d)
            if len(self.handed) > MAX_HANDED:  # txacks that never came (the ledger expires them)
                self.handed.pop(next(iter(self.handed)))
            self.counters["handed_over"] += 1
            log.info("command %s for %s handed to ChirpStack as queue item %s",
                     d.label, dev_eui.hex().upper(), iid)

    def drain_all(self) -> None:
        for dev_eui in list(self.apps):
            if self.queue.pending(dev_eui):
                self.drain(dev_eui)

    def tx_acked(self, queue_item_id: str) -> None:
        """ChirpStack's txack: a LoRa gateway took the downlink for transmission."""
        got = self.handed.pop(queue_item_id, None)
        if got is None:
            return
        self.counters["tx_acked"] += 1
        self.queue.sent(*got)
