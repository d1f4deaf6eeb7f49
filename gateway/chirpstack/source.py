"""ChirpStack's MQTT integration as an uplink source: events in, our queued items out.

Subscribes (QoS 1, persistent session) to ``application/<app>/device/+/event/{up,join,ack,txack}``
on ChirpStack's broker.  Each message is handed from paho's thread to the event loop, parsed
(gateway/chirpstack/events.py), and an ``up`` becomes one item through the same intake as our
own forwarders' uplinks.  The PUBACK is sent by hand (``manual_ack``) only after the item was
given to the intake, so a gateway killed in between gets the event again from the broker:
at least once, never lost.  A redelivered or doubly-published event is dropped by its
``deduplicationId`` (the last DEDUP_IDS of them are remembered; consumers still drop duplicates
on (gateway_id, seq) across restarts, see docs/city-scale.md).

An event the intake cannot take (its durable queue full and its backlog too) is not
acknowledged: ChirpStack's broker keeps it, and stops sending more once paho's in-flight window
is full, which is the back-pressure a full disk should cause.

Malformed events are counted by reason (events.REASONS), logged once per reason per minute,
acknowledged (a broker would otherwise redeliver them forever) and dropped: there is nothing
in them to keep.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from typing import Callable

from gateway.backhaul.mqtt_link import MqttLink
from gateway.chirpstack.events import (EVENT_TYPES, AckEvent, EventError, JoinEvent, TxAckEvent,
                                       UpEvent, parse_event)
from gateway.chirpstack.readings import up_item
from gateway.lorawan.registry import Registry

__all__ = ["ChirpStackSource", "event_topics", "DEDUP_IDS"]

log = logging.getLogger(__name__)

DEDUP_IDS = 16384
LOG_EVERY_S = 60.0
_TYPE_OF = {UpEvent: "up", JoinEvent: "join", AckEvent: "ack", TxAckEvent: "txack"}


def event_topics(application_id: str = "+") -> list[str]:
    return [f"application/{application_id}/device/+/event/{t}" for t in EVENT_TYPES]


class ChirpStackSource:
    """``store(item) -> bool`` queues one item (the service's intake; False: dropped);
    ``downlinks`` (gateway/chirpstack/downlinks.py) is told which devices are ChirpStack's and
    of txacks; ``on_device_ack(dev_eui, records)`` gets every decoded ack uplink."""

    def __init__(self, link: MqttLink, client_id: str, application_id: str, registry: Registry,
                 store: Callable[[bytes], bool], loop: asyncio.AbstractEventLoop,
                 downlinks=None, on_device_ack: Callable | None = None) -> None:
        self.link = link
        self.registry = registry
        self.store = store
        self.loop = loop
        self.downlinks = downlinks
        self.on_device_ack = on_device_ack
        self.topics = event_topics(application_id)
        self.client = link.client(client_id, manual_ack=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.connected = self.subscribed = False
        self.events: Counter = Counter({t: 0 for t in EVENT_TYPES})
        self.refused: Counter = Counter()
        self.counters = {"items": 0, "duplicates": 0, "payload_errors": 0, "not_stored": 0}
        self.last_error: str | None = None
        self._seen: OrderedDict = OrderedDict()
        self._logged: dict[str, float] = {}

    def start(self) -> "ChirpStackSource":
        self.link.connect_async(self.client, keepalive=60)
        self.client.loop_start()
        log.info("taking ChirpStack events from %s: %s", self.link.describe(), self.topics[0])
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, body: bytes) -> bool:
        """A command for ChirpStack (QoS 1); False when not connected (it waits)."""
        if not self.connected:
            return False
        return self.client.publish(topic, body, qos=1).rc == 0

    def stats(self) -> dict:
        extra = dict(self.downlinks.counters) if self.downlinks is not None else {}
        return dict(self.counters, **extra, events=dict(self.events), refused=dict(self.refused),
                    connected=self.connected, subscribed=self.subscribed,
                    last_error=self.last_error)

    # ---- paho's thread --------------------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.last_error = f"ChirpStack broker refused the connection: {reason_code}"
            log.error("%s (check [chirpstack] username / password_file)", self.last_error)
            return
        self.connected = True
        client.subscribe([(t, 1) for t in self.topics])

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected = self.subscribed = False

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        self.subscribed = not any(rc.is_failure for rc in reason_codes)
        if not self.subscribed:
            self.last_error = "ChirpStack broker refused the event subscription (its ACL?)"
            log.error(self.last_error)

    def _on_message(self, client, userdata, msg) -> None:
        self.loop.call_soon_threadsafe(self._handle, msg.topic, msg.payload, msg.mid, msg.qos)

    # ---- the event loop -------------------------------------------------------------------

    def _handle(self, topic: str, payload: bytes, mid: int, qos: int) -> None:
        try:
            stored = self._take(topic, payload)
        except Exception as exc:
            stored = False
            self.last_error = f"event on {topic} not stored: {exc}"
            log.exception("ChirpStack %s", self.last_error)
        if not stored:  # no PUBACK: the broker keeps it and sends it again on reconnect
            self.counters["not_stored"] += 1
        elif qos:
            self.client.ack(mid, qos)

    def _take(self, topic: str, payload: bytes) -> bool:
        """False: the event was not stored and must not be acknowledged."""
        try:
            ev = parse_event(topic, payload)
        except EventError as exc:
            self.refused[exc.reason] += 1
            self._log_refusal(exc)
            return True
        except Exception as exc:  # a bug in the parser must not stop the source
            self.refused["bad-encoding"] += 1
            log.exception("ChirpStack event on %s could not be parsed: %s", topic, exc)
            return True
        self.events[_TYPE_OF[type(ev)]] += 1
        if self.downlinks is not None:
            if isinstance(ev, TxAckEvent):
                self.downlinks.tx_acked(ev.queue_item_id)
            elif isinstance(ev, (UpEvent, JoinEvent)):
                self.downlinks.heard(ev.dev_eui, ev.application_id)
        if not isinstance(ev, UpEvent):
            return True
        if ev.deduplication_id in self._seen:
            self.counters["duplicates"] += 1
            return True
        dev = self.registry.get(ev.dev_eui)
        item, error, records, message = up_item(ev, dev.kind if dev is not None else None,
                                                time.time())
        if not self.store(item):  # the intake's backlog is full too (counted, logged there)
            return False
        self._seen[ev.deduplication_id] = None
        if len(self._seen) > DEDUP_IDS:
            self._seen.popitem(last=False)
        self.counters["items"] += 1
        if error is not None:
            self.counters["payload_errors"] += 1
        if message == "ack" and self.on_device_ack is not None:
            self.on_device_ack(ev.dev_eui, records)
        return True

    def _log_refusal(self, exc: EventError) -> None:
        now = time.monotonic()
        if now - self._logged.get(exc.reason, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._logged[exc.reason] = now
            log.warning("ChirpStack event refused (%s so far): %s",
                        self.refused[exc.reason], exc)
