"""Publish the durable record queue to MQTT as CBOR batches (see :mod:`gateway.backhaul.batch`).

Design (threads, no asyncio needed):

* paho-mqtt's network thread (``loop_start``) handles the socket, keepalive and automatic
  reconnects with exponential backoff (``reconnect_delay_set``).
* One worker thread builds batches from :meth:`RecordQueue.peek` and publishes them with QoS 1
  over a persistent session (``clean_session=False``, fixed client id).
* Records are deleted with :meth:`RecordQueue.ack` only after the broker's PUBACK for the
  batch's mid.  "Published" never means "acknowledged".  ``on_publish`` (paho's thread) only
  marks the batch done; the worker deletes every batch done so far in one transaction before
  it reads the next batch.  Why: each SQLite call gives up the GIL and must win it back from
  the busy event loop, so a DELETE per PUBACK on paho's thread stalled PUBACK reading and
  publishing for tens of ms at a time and the queue backed up (group ack: one commit, one
  fsync for several batches).  Done ids stay excluded from reads until they are deleted.
* At most ``max_inflight`` batches (each <= ``max_batch_bytes``) are held in memory; the worker
  publishes only while connected.  During an outage the data stays in the SQLite queue, so
  memory stays bounded however long the outage lasts.
* After a reconnect paho re-sends the unacknowledged in-flight batches (DUP flag, same
  payload); after a restart of the gateway everything not acked is published again from the
  queue with a new ``seq``.  Delivery is therefore **at-least-once**: consumers dedupe on
  (gateway_id, seq) and on the records' name/time.

A queued item that is not a CBOR record map or array cannot be framed; it is removed from the
queue explicitly, logged, and counted in ``counters["invalid_dropped"]`` instead of blocking
the queue forever.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import paho.mqtt.client as mqtt

from gateway.backhaul import batch as wire
from gateway.histogram import Histogram
from gateway.backhaul.mqtt_link import MqttLink, connect_failure, dropped_before_connack, refusal
from gateway.backhaul.store import RecordQueue

__all__ = ["Publisher"]

log = logging.getLogger(__name__)

SEQUENCE_NAME = "mqtt"
REFUSED_PAUSE_S = 5.0  # after the broker refuses a batch (MQTT 5 PUBACK reason, e.g. an ACL)


class Publisher:
    def __init__(
        self,
        queue: RecordQueue,
        *,
        gateway_id: str,
        site: str,
        host: str = "127.0.0.1",
        port: int = 1883,
        link: MqttLink | None = None,
        client_factory: Callable[[str], object] | None = None,
        client_id: str | None = None,
        topic_prefix: str = wire.DEFAULT_PREFIX,
        max_batch_bytes: int = 16384,
        max_batch_records: int = 500,
        max_batch_age_s: float = 1.0,
        max_inflight: int = 2,
        keepalive: int = 60,
        reconnect_min_s: int = 1,
        reconnect_max_s: int = 60,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 1 <= max_inflight <= 16:
            raise ValueError("max_inflight must be in 1..16")
        self.queue = queue
        self.gateway_id = gateway_id
        self.topic = wire.topic(site, gateway_id, prefix=topic_prefix)
        self.link = link or MqttLink(host, port)
        self.host, self.port, self.keepalive = self.link.host, self.link.port, keepalive
        self.max_batch_bytes = max_batch_bytes
        self.max_batch_records = max_batch_records
        self.max_batch_age_s = max_batch_age_s
        self.max_inflight = max_inflight
        self._clock = clock
        self.client_id = client_id or f"streetgrid-{gateway_id}"
        self.counters = {"published": 0, "acked": 0, "acked_records": 0, "reconnects": 0,
                         "invalid_dropped": 0, "connect_failures": 0, "refused": 0}
        self.last_error = ""  # why the broker is not reachable, for stats and status; "" = ok
        self._refused_until = 0.0
        self.latency = Histogram()  # seconds from publish() to the broker's PUBACK, per batch
        self._sent_at: dict[int, float] = {}  # mid -> monotonic time of publish()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._inflight: dict[int, list[int]] = {}  # mid -> queue ids
        self._inflight_ids: set[int] = set()
        self._early: set[int] = set()  # mids whose PUBACK came before publish() returned
        self._done: list[list[int]] = []  # ids of PUBACKed batches, not yet deleted (worker)
        self._connected = False
        self._ever_connected = False
        self._stopping = False
        self._draining = False  # stop(): wait for the PUBACKs in flight, publish nothing new
        self._partial_since: float | None = None
        self._worker: threading.Thread | None = None
        factory = client_factory or self.link.client
        self.client = factory(self.client_id)
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_log = self._on_log
        self._socket_error = ""  # paho's last error log line (a read error has no callback)
        self._refused = False
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.reconnect_delay_set(reconnect_min_s, reconnect_max_s)
        self.client.max_inflight_messages_set(max_inflight)
        self.client.max_queued_messages_set(max_inflight)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> "Publisher":
        # connect_async + loop_start: paho's thread connects (and keeps retrying) in background
        self.link.connect_async(self.client, keepalive=self.keepalive)
        self.client.loop_start()
        self._worker = threading.Thread(target=self._run, name="mqtt-publisher", daemon=True)
        self._worker.start()
        return self

    def stop(self, timeout: float = 5.0, drain_s: float = 2.0) -> None:
        """Stop publishing.  Unacknowledged records stay in the queue.  Idempotent.

        First up to ``drain_s`` for the PUBACKs of the batches already in flight, sending no
        new one: a batch the broker has but whose PUBACK the stop did not wait for would be
        published again by the next start, a duplicate at every restart under load."""
        with self._lock:
            if self._stopping:
                return
            self._draining = True
            self._wake.notify_all()
            deadline = time.monotonic() + drain_s
            while (self._inflight or self._done) and self._connected:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning("stopping with %d batch(es) unacknowledged; they stay queued",
                                len(self._inflight))
                    break
                self._wake.wait(min(left, 0.1))
            self._stopping = True
            self._wake.notify_all()
        if self._worker is not None:
            self._worker.join(timeout)
        try:
            self.client.disconnect()
        except Exception:  # pragma: no cover - best effort
            pass
        self.client.loop_stop()

    def __enter__(self) -> "Publisher":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def notify(self) -> None:
        """Wake the worker (e.g. right after ``queue.put``)."""
        with self._lock:
            self._wake.notify_all()

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def inflight(self) -> int:
        with self._lock:
            return len(self._inflight)

    def flush(self, timeout: float) -> bool:
        """Wait until the queue is empty and nothing is in flight; return whether it got there."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                idle = not self._inflight
            if idle and self.queue.stats().records == 0:
                return True
            self.notify()
            time.sleep(0.02)
        return False

    run_until_empty = flush

    # -- paho callbacks (paho's network thread) --------------------------------------------

    def _on_log(self, client, userdata, level, buf) -> None:
        if level == mqtt.MQTT_LOG_ERR:
            self._socket_error = buf

    def _on_connect_fail(self, client, userdata) -> None:
        self._note_failure(connect_failure(self.link))

    def _note_failure(self, why: str) -> None:
        """Log a connect failure once per distinct reason (paho retries with backoff; the
        same line every few seconds for hours helps nobody), count every one."""
        with self._lock:
            self.counters["connect_failures"] += 1
            new, self.last_error = why != self.last_error, why
        if new:
            log.error("%s; records stay queued, retrying", why)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._refused = True  # the disconnect that follows says nothing new
            self._note_failure(refusal(self.link, reason_code))
            return
        with self._lock:
            self.last_error = ""
            if self._ever_connected:
                self.counters["reconnects"] += 1
            self._ever_connected = True
            self._connected = True
            self._wake.notify_all()
        log.info("MQTT connected (session present: %s)", getattr(flags, "session_present", None))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._lock:
            was, self._connected = self._connected, False
        if not was and not self._stopping and not self._refused and self._socket_error:
            self._note_failure(dropped_before_connack(self.link, self._socket_error))
        self._socket_error, self._refused = "", False
        if was and not self._stopping:  # a refused connect was logged by _note_failure
            log.warning("MQTT disconnected (%s); data stays queued, reconnecting", reason_code)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._lock:
            ids = self._inflight.get(mid)
            if ids is None:
                self._early.add(mid)
                return
            self._complete(mid, ids, reason_code)

    def _complete(self, mid: int, ids: list[int], reason_code) -> None:
        """The broker answered batch ``mid`` (caller holds the lock): hand it to the worker for
        deletion, or on a refusal release its ids so they are published again."""
        self._inflight.pop(mid, None)
        sent = self._sent_at.pop(mid, None)
        if sent is not None:
            self.latency.observe(time.monotonic() - sent)
        if reason_code is not None and getattr(reason_code, "is_failure", False):
            self._inflight_ids.difference_update(ids)
            self.counters["refused"] += 1
            self._refused_until = time.monotonic() + REFUSED_PAUSE_S
            log.error("the broker refused a batch of %d records on %s: %s; they stay queued "
                      "(is this client allowed to publish there? check the broker's ACL)",
                      len(ids), self.topic, reason_code)
        else:
            self._done.append(ids)
        self._wake.notify_all()

    def _ack_done(self, done: list[list[int]]) -> None:
        """Delete the PUBACKed batches in one transaction (worker thread), then release their
        ids; a failed delete releases them too, so they are re-sent (at-least-once)."""
        ids = [i for batch_ids in done for i in batch_ids]
        try:
            self.queue.ack(ids)
            failed = False
        except Exception:
            log.exception("ack of %d records failed; they will be re-sent", len(ids))
            failed = True
        with self._lock:
            self._inflight_ids.difference_update(ids)
            if not failed:
                self.counters["acked"] += len(done)
                self.counters["acked_records"] += len(ids)
            self._wake.notify_all()

    # -- worker ----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._stopping and not self._done and (
                    not self._connected or self._draining
                    or len(self._inflight) >= self.max_inflight
                ):
                    self._wake.wait(0.5)
                done, self._done = self._done, []
                stopping = self._stopping
                ready = (self._connected and not self._draining
                         and len(self._inflight) < self.max_inflight)
            if done:
                self._ack_done(done)
            if stopping:
                return
            if not ready:
                continue
            pause = self._refused_until - time.monotonic()
            if pause > 0:
                with self._lock:
                    if not self._stopping:
                        self._wake.wait(min(pause, 0.5))
                continue
            with self._lock:
                skip = set(self._inflight_ids)
            try:
                wait = self._publish_one(skip)
            except Exception:
                log.exception("publisher iteration failed")
                wait = 0.5
            if wait:
                with self._lock:
                    if not self._stopping and not self._done:
                        self._wake.wait(wait)

    def _publish_one(self, skip: set[int]) -> float:
        """Publish at most one batch; return how long to wait before the next attempt (0: none)."""
        # Batches leave in id order, so everything in flight is below max(skip): read only what
        # follows it instead of re-reading (and skipping) every unacknowledged record. Ids a
        # refused publish released below it are read again once nothing is in flight.
        # max_bytes has headroom so that fit_count, not the read, decides when a batch is full.
        rows = self.queue.peek(max_records=self.max_batch_records + 1,
                               max_bytes=2 * self.max_batch_bytes,
                               after_id=max(skip) if skip else None)
        if not rows:
            self._partial_since = None
            return 0.2
        good, bad = [], []
        for rid, payload in rows:
            try:
                wire.item_records(payload)
                good.append((rid, payload))
            except wire.BatchError:
                bad.append(rid)
        if bad:
            log.error("dropping %d queued items that are not CBOR SenML records", len(bad))
            self.queue.ack(bad)
            with self._lock:
                self.counters["invalid_dropped"] += len(bad)
            return 0
        n = wire.fit_count([len(p) for _, p in good[:self.max_batch_records]],
                           self.max_batch_bytes, self.gateway_id)
        full = n < len(good) or n >= self.max_batch_records
        now = time.monotonic()
        if not full:
            if self._partial_since is None:
                self._partial_since = now
            left = self._partial_since + self.max_batch_age_s - now
            if left > 0:
                return min(left, 0.2)
        self._partial_since = None
        chosen = good[:n]
        ids = [rid for rid, _ in chosen]
        seq = self.queue.next_sequence(SEQUENCE_NAME)
        payload = wire.encode_batch(
            self.gateway_id, seq, int(self._clock()), [p for _, p in chosen]
        )
        with self._lock:
            self._inflight_ids.update(ids)
        sent = time.monotonic()
        info = self.client.publish(self.topic, payload, qos=1)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            # not accepted by paho at all: release the ids, retry later
            with self._lock:
                self._inflight_ids.difference_update(ids)
            log.warning("publish not accepted by paho (rc=%s); retrying", info.rc)
            return 0.5
        # MQTT_ERR_NO_CONN: paho keeps the message and sends it after the reconnect
        with self._lock:
            self.counters["published"] += 1
            self._inflight[info.mid] = ids
            self._sent_at[info.mid] = sent
            if info.mid in self._early:
                self._early.discard(info.mid)
                self._complete(info.mid, ids, None)
        return 0
