"""ChirpStack's MQTT integration as an uplink source: events in, our queued items out.

Subscribes (QoS 1, persistent session) to ``application/<app>/device/+/event/{up,join,ack,txack}``
on ChirpStack's broker.  Each message is handed from paho's thread to the event loop, parsed
(gateway/chirpstack/events.py), and an ``up`` becomes one item through the same intake as our
own forwarders' uplinks.  The PUBACK is sent by hand (``manual_ack``) only after the item was
given to the intake, so a gateway killed in between gets the event again from the broker:
at least once, never lost.  A redelivered or doubly-published event is dropped by its
``deduplicationId`` (the last DEDUP_IDS of them are remembered; consumers still drop duplicates
on (gateway_id, seq) across restarts, see docs/city-scale.md).

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
from gateway.chirpstack.events import EVENT_TYPES, EventError, UpEvent, parse_event
from gateway.chirpstack.readings import up_item
from gateway.lorawan.registry import Registry

__all__ = ["ChirpStackSource", "event_topics", "DEDUP_IDS"]

log = logging.getLogger(__name__)

DEDUP_IDS = 16384
LOG_EVERY_S = 60.0


def event_topics(application_id: str = "+") -> list[str]:
    return [f"application/{application_id}/device/+/event/{t}" for t in EVENT_TYPES]


class ChirpStackSource:
    """``store(item) -> bool`` queues one item (the service's intake; False: dropped)."""

    def __init__(self, link: MqttLink, client_id: str, application_id: str, registry: Registry,
                 store: Callable[[bytes], bool], loop: asyncio.AbstractEventLoop) -> None:
        self.link = link
        self.registry = registry
        self.store = store
        self.loop = loop
        self.topics = event_topics(application_id)
        self.client = link.client(client_id, manual_ack=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.connected = self.subscribed = False
        self.events: Counter = Counter({t: 0 for t in EVENT_TYPES})
        self.refused: Counter = Counter()
        self.counters = {"items": 0, "duplicates": 0, "payload_errors": 0, "dropped": 0}
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

    def stats(self) -> dict:
        return dict(self.counters, events=dict(self.events), refused=dict(self.refused),
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
            self._take(topic, payload)
        finally:
            if qos:
                self.client.ack(mid, qos)

    def _take(self, topic: str, payload: bytes) -> None:
        try:
            ev = parse_event(topic, payload)
        except EventError as exc:
            self.refused[exc.reason] += 1
            self._log_refusal(exc)
            return
        except Exception as exc:  # a bug in the parser must not stop the source
            self.refused["bad-encoding"] += 1
            log.exception("ChirpStack event on %s could not be parsed: %s", topic, exc)
            return
        kind = type(ev).__name__
        self.events[{"UpEvent": "up", "JoinEvent": "join", "AckEvent": "ack",
                     "TxAckEvent": "txack"}[kind]] += 1
        if not isinstance(ev, UpEvent):
            return
        if ev.deduplication_id in self._seen:
            self.counters["duplicates"] += 1
            return
        dev = self.registry.get(ev.dev_eui)
        item, error = up_item(ev, dev.kind if dev is not None else None, time.time())
        if not self.store(item):
            self.counters["dropped"] += 1
            return
        self._seen[ev.deduplication_id] = None
        if len(self._seen) > DEDUP_IDS:
            self._seen.popitem(last=False)
        self.counters["items"] += 1
        if error is not None:
            self.counters["payload_errors"] += 1

    def _log_refusal(self, exc: EventError) -> None:
        now = time.monotonic()
        if now - self._logged.get(exc.reason, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._logged[exc.reason] = now
            log.warning("ChirpStack event refused (%s so far): %s",
                        self.refused[exc.reason], exc)
