"""The operator's HTTP endpoint, on ``[http] listen`` (loopback by default): ``/metrics``
(Prometheus text format, by prometheus-client), ``/healthz`` (liveness), ``/readyz``
(readiness), the live status page ``/`` with its ``/events`` stream (gateway/operations/status_page.py),
and ``/status.json`` (the snapshot stats.json holds, fresh; `python -m gateway status --url`).

Why a thread and a hop onto the event loop: prometheus-client serves WSGI, which blocks, so the
server runs in its own thread; but the counters belong to the event loop, so every scrape asks
the loop for one consistent ``GatewayService.snapshot()`` (call_soon_threadsafe) instead of
reading dicts another thread is updating. A loop that cannot answer within LOOP_TIMEOUT_S is
what /healthz reports: the gateway is alive only if its loop turns.

Metric names follow Prometheus conventions (base units, ``_total`` counters) and carry labels
from bounded sets only: reason, window, result, forwarder, bus and meter. A failure to bind
the port is logged and counted; the data path does not depend on it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import socketserver
import threading
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import PLATFORM_COLLECTOR, PROCESS_COLLECTOR, CollectorRegistry, make_wsgi_app
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                   HistogramMetricFamily, InfoMetricFamily)

from gateway.operations import status_page
from gateway.operations.health import readiness

log = logging.getLogger("gateway.http")

LOOP_TIMEOUT_S = 2.0
_UPLINK_NOT_REJECTED = ("accepted", "join")


# the page loads only its own files and talks only to this server
_SECURITY = [("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; "
              "frame-ancestors 'none'"), ("X-Content-Type-Options", "nosniff"),
             ("Referrer-Policy", "no-referrer")]


def _reply(start_response, status: str, ctype: str, body: bytes):
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body))),
                            ("Cache-Control", "no-store")] + _SECURITY)
    return [body]


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args) -> None:  # no access log on the gateway's stderr
        pass


class SnapshotCollector:
    """prometheus-client collector over one GatewayService.snapshot() per scrape."""

    def __init__(self, snapshot) -> None:
        self._snapshot = snapshot  # () -> dict, thread-safe (OperatorHttp.snapshot)

    def collect(self):
        s = self._snapshot()
        fs, up, dd = s["forwarder_server"], s["uplink"], s["dedup"]
        c = CounterMetricFamily("streetgrid_uplinks_received", "Uplink copies received from "
                                "packet forwarders (rxpk with a good CRC)", fs.get("rxpk", 0))
        yield c
        yield CounterMetricFamily("streetgrid_uplinks_accepted", "Uplinks accepted (authentic, "
                                  "fresh counter) after deduplication", up.get("accepted", 0))
        rej = CounterMetricFamily("streetgrid_uplinks_rejected", "Uplinks rejected, by reason",
                                  labels=["reason"])
        for reason, n in sorted(up.items()):
            if reason not in _UPLINK_NOT_REJECTED:
                rej.add_metric([reason], n)
        rej.add_metric(["crc-bad"], fs.get("crc-bad", 0))
        yield rej
        joins = CounterMetricFamily("streetgrid_joins", "Join-requests, by result",
                                    labels=["result"])
        joins.add_metric(["accepted"], fs.get("joins-accepted", 0))
        for key, n in sorted(fs.items()):
            if key.startswith("join-"):
                joins.add_metric([key[5:]], n)
        yield joins
        yield CounterMetricFamily("streetgrid_dedup_copies", "Copies of frames heard by more "
                                  "than one forwarder, merged", dd.get("merged", 0))
        yield CounterMetricFamily("streetgrid_dedup_late_copies", "Copies that arrived after "
                                  "their frame was processed", dd.get("late", 0))
        dl = CounterMetricFamily("streetgrid_downlinks", "Downlinks, by window and by the "
                                 "forwarder's TX_ACK result", labels=["window", "result"])
        for key, n in sorted(fs.items()):
            if key in ("downlink-rx1", "downlink-rx2"):
                dl.add_metric([key[9:], "sent"], n)
            elif key.startswith("tx-ack-"):
                dl.add_metric(["any", key[7:].lower()], n)
        dl.add_metric(["any", "late"], fs.get("downlink-late", 0))
        yield dl
        q = s.get("queue", {})
        yield GaugeMetricFamily("streetgrid_queue_records", "Records in the durable queue",
                                q.get("records", 0))
        yield GaugeMetricFamily("streetgrid_queue_bytes", "Accounted bytes in the durable "
                                "queue", q.get("used_bytes", 0))
        yield GaugeMetricFamily("streetgrid_queue_max_bytes", "The durable queue's bound",
                                q.get("max_bytes", 0))
        yield GaugeMetricFamily("streetgrid_queue_oldest_record_age_seconds", "Age of the "
                                "oldest record waiting for the broker (0 when empty)",
                                q.get("oldest_age_s", 0))
        pub = s.get("publisher", {})
        yield GaugeMetricFamily("streetgrid_mqtt_connected", "1 while the broker connection "
                                "is up", 1 if pub.get("connected") else 0)
        yield CounterMetricFamily("streetgrid_mqtt_acked_records", "Records the broker "
                                  "acknowledged (then deleted from the queue)",
                                  pub.get("acked_records", 0))
        yield CounterMetricFamily("streetgrid_mqtt_connect_failures", "Connects that failed "
                                  "or were refused (the reason is in the log and in status)",
                                  pub.get("connect_failures", 0))
        yield CounterMetricFamily("streetgrid_mqtt_refused_batches", "Batches the broker "
                                  "refused (MQTT 5 PUBACK reason); their records stay queued",
                                  pub.get("refused", 0))
        lat = pub.get("latency")
        if lat:
            yield HistogramMetricFamily(
                "streetgrid_mqtt_publish_latency_seconds", "From publishing a batch to the "
                "broker's PUBACK", buckets=[(str(le), n) for le, n in lat["buckets"]],
                sum_value=lat["sum"])
        fwd = sorted(s.get("forwarders", {}).items())
        fw = GaugeMetricFamily("streetgrid_forwarder_last_seen_seconds", "Seconds since the "
                               "forwarder's last PULL_DATA", labels=["forwarder"])
        rx = CounterMetricFamily("streetgrid_forwarder_rx_packets", "rxpk received from the "
                                 "forwarder", labels=["forwarder"])
        tx = CounterMetricFamily("streetgrid_forwarder_tx_packets", "Downlinks (PULL_RESP) "
                                 "sent through the forwarder", labels=["forwarder"])
        for eui, f in fwd:
            fw.add_metric([eui], f.get("last_pull_s", 0))
            rx.add_metric([eui], f.get("rx", 0))
            tx.add_metric([eui], f.get("tx", 0))
        yield fw
        yield rx
        yield tx
        cm = s.get("commands", {})
        outcomes = CounterMetricFamily("streetgrid_commands", "Operator commands, by outcome",
                                       labels=["result"])
        for key in ("accepted", "rejected", "sent", "acknowledged", "failed", "expired"):
            outcomes.add_metric([key], cm.get(key, 0))
        yield outcomes
        refused = CounterMetricFamily("streetgrid_commands_refused", "Commands refused, by "
                                      "reason (bad-signature, replayed, stale, unsigned, ...)",
                                      labels=["reason"])
        for reason, n in sorted(cm.get("refused", {}).items()):
            refused.add_metric([reason], n)
        yield refused
        cs = s.get("chirpstack") or {}
        if cs:
            ev = CounterMetricFamily("streetgrid_chirpstack_events", "ChirpStack integration "
                                     "events taken, by type", labels=["type"])
            for t, n in sorted(cs.get("events", {}).items()):
                ev.add_metric([t], n)
            yield ev
            bad = CounterMetricFamily("streetgrid_chirpstack_events_refused", "ChirpStack events "
                                      "refused, by reason", labels=["reason"])
            for reason, n in sorted(cs.get("refused", {}).items()):
                bad.add_metric([reason], n)
            yield bad
            yield CounterMetricFamily("streetgrid_chirpstack_duplicates", "ChirpStack up events "
                                      "dropped as already taken (deduplicationId)",
                                      value=cs.get("duplicates", 0))
            yield GaugeMetricFamily("streetgrid_chirpstack_connected", "1 while subscribed to "
                                    "ChirpStack's events", value=int(bool(cs.get("subscribed"))))
        names = (("polls", "Polls that produced a reading"), ("timeouts", "Requests without "
                 "an answer"), ("crc_errors", "Replies with a bad CRC"))
        for key, doc in names:
            m = CounterMetricFamily("streetgrid_modbus_" + key, doc, labels=["bus", "meter"])
            for bus, b in sorted(s.get("modbus", {}).items()):
                for meter, st in sorted(b.get("meters", {}).items(), key=lambda kv: int(kv[0])):
                    m.add_metric([bus, str(meter)], st.get(key, 0))
            yield m
        info = InfoMetricFamily("streetgrid_gateway", "This gateway",
                                {"gateway_id": str(s.get("gateway_id")),
                                 "site": str(s.get("site")), "version": _version()})
        yield info


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("streetgrid")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return "unknown"


class OperatorHttp:
    """Start with start(loop, snapshot), stop with stop()."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.counters = {"bind_errors": 0, "loop_timeouts": 0}
        self.streams = status_page.EventStreams()
        self._server = None
        self._thread = None
        self._loop = None
        self._snapshot = None

    def snapshot(self) -> dict:
        """The service's snapshot, taken on its event loop (raises TimeoutError if the loop
        does not turn within LOOP_TIMEOUT_S)."""
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def take() -> None:
            try:
                fut.set_result(self._snapshot())
            except Exception as exc:  # noqa: BLE001 - reported to the scrape
                fut.set_exception(exc)

        self._loop.call_soon_threadsafe(take)
        try:
            return fut.result(LOOP_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            self.counters["loop_timeouts"] += 1
            raise TimeoutError("the event loop did not answer in %.0f s" % LOOP_TIMEOUT_S)

    def _app(self, metrics):
        def app(environ, start_response):
            path = environ.get("PATH_INFO", "")
            if path == "/metrics":
                return metrics(environ, start_response)
            if path in ("/healthz", "/readyz"):
                try:
                    s = self.snapshot()
                    why = readiness(s) if path == "/readyz" else []
                except Exception as exc:  # noqa: BLE001 - not alive
                    why = [str(exc)]
                body = json.dumps({"ok": not why, "problems": why}).encode()
                start_response("200 OK" if not why else "503 Service Unavailable",
                               [("Content-Type", "application/json"),
                                ("Content-Length", str(len(body)))])
                return [body]
            if path == "/status.json":
                try:
                    body = json.dumps(self.snapshot()).encode()
                except Exception as exc:  # noqa: BLE001 - the loop did not answer
                    return _reply(start_response, "503 Service Unavailable", "application/json",
                                  json.dumps({"error": str(exc)}).encode())
                return _reply(start_response, "200 OK", "application/json", body)
            if path == "/events":
                if not self.streams.take():
                    return _reply(start_response, "503 Service Unavailable", "text/plain",
                                  b"too many status pages open\n")
                start_response("200 OK", [("Content-Type", "text/event-stream"),
                                          ("Cache-Control", "no-store")] + _SECURITY)
                return self.streams.stream(self.snapshot)
            page = status_page.static_file(path)
            if page is not None:
                return _reply(start_response, "200 OK", page[1], page[0])
            return _reply(start_response, "404 Not Found", "text/plain",
                          b"not found: / (status page), /events, /status.json, /metrics, "
                          b"/healthz, /readyz\n")
        return app

    def start(self, loop: asyncio.AbstractEventLoop, snapshot) -> int | None:
        """Serve; -> the bound port, or None when it could not bind (logged, counted)."""
        self._loop, self._snapshot = loop, snapshot
        registry = CollectorRegistry(auto_describe=False)
        registry.register(SnapshotCollector(self.snapshot))
        registry.register(PROCESS_COLLECTOR)
        registry.register(PLATFORM_COLLECTOR)
        try:
            self._server = make_server(self.host, self.port, self._app(make_wsgi_app(registry)),
                                       server_class=_Server, handler_class=_QuietHandler)
        except OSError as exc:
            self.counters["bind_errors"] += 1
            log.error("cannot serve the status page, /metrics, /healthz, /readyz on %s:%d: %s; "
                      "the gateway runs without them", self.host, self.port, exc)
            return None
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="operator-http",
                                        daemon=True)
        self._thread.start()
        return self.port

    def stop(self) -> None:
        self.streams.stopping.set()  # open /events end; serve_forever can return
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
