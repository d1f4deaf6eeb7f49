"""Semtech UDP (GWMP) server for many packet forwarders: the gateway's radio-side I/O.

:class:`ForwarderServer` binds one UDP socket (asyncio DatagramProtocol) and:

* PUSH_DATA: answers PUSH_ACK at once (same token and version) to the sender, then feeds
  every decoded rxpk with ``stat == 1`` (CRC ok) into a :class:`gateway.dedup.Deduplicator`
  as ``RadioMeta.from_rxpk(gateway_eui, rxpk)``.  rxpk entries the decoder dropped count in
  ``rxpk-errors``, CRC-bad / no-CRC frames in ``crc-bad``.
* PULL_DATA: answers PULL_ACK and remembers the sender's address in ``forwarders``
  (gateway EUI upper-case hex -> :class:`ForwarderInfo` (addr, last_seen monotonic)); that
  address is where PULL_RESP for this forwarder goes (the forwarder's downstream socket).
* TX_ACK: counts ``tx-ack-ok`` or ``tx-ack-<ERROR>`` (e.g. ``tx-ack-TOO_LATE``).
* Any datagram decode() rejects (GwmpError), or one of a type a forwarder never sends, counts
  ``malformed`` and logs one warning line with the peer address and the error; the server
  keeps serving.

A background task sleeps until ``Deduplicator.next_deadline()`` (or until a new copy arrives),
releases due groups and passes each Uplink to ``UplinkProcessor.process(uplink, time.time())``:

* accepted data results -> ``on_records(result)`` (the caller queues them, e.g. RecordQueue);
  rejected ones count as ``uplink-<reason>``.
* join-requests -> :func:`gateway.join.handle_join_request`; an accepted join is sent as a
  class-A RX1 downlink: PULL_RESP with ``Txpk.for_class_a(tmst = copy.tmst + rx1_delay_us
  (mod 2**32), freq/DR = region.rx1(uplink freq, uplink DR, 0), codr "4/5", powe 14)``.
  The forwarder is the best copy's (``Uplink.best()`` order: SNR, then RSSI), or the next best
  that has sent PULL_DATA; if none has, ``no-downlink-path`` is counted.

Not implemented (documented fallback): RX2 (``region.rx2()``, ``tmst + rx2_delay_us``) when
RX1 is refused (TX_ACK TOO_LATE / COLLISION); TX_ACK results are only counted, not matched to
the downlink.  Storage errors (SessionError) and on_records exceptions are logged and counted
(``process-error`` / ``on-records-error``), and never stop the task.

Counters (``counters``, a dict with missing keys meaning 0): datagrams, malformed, push-data,
pull-data, tx-ack, rxpk, rxpk-errors, crc-bad, uplinks, records, joins-accepted,
join-<reason>, uplink-<reason>, downlinks, no-downlink-path, downlink-error, tx-ack-ok,
tx-ack-<ERROR>, process-error, on-records-error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Callable

from gateway.dedup import Deduplicator, RadioMeta, Uplink, _rank
from gateway.join import handle_join_request
from gateway.registry import Registry
from gateway.sessions import SessionStore
from gateway.uplink import Result, UplinkProcessor
from protocol import gwmp
from protocol.lorawan.region import Region, RegionError

__all__ = ["ForwarderServer", "ForwarderInfo", "JOIN_ACCEPT_POWE", "JOIN_ACCEPT_CODR"]

log = logging.getLogger(__name__)

JOIN_ACCEPT_POWE = 14
JOIN_ACCEPT_CODR = "4/5"


@dataclass(slots=True)
class ForwarderInfo:
    """Where PULL_RESP for one forwarder goes: addr of its last PULL_DATA, at last_seen
    (monotonic seconds)."""

    addr: tuple
    last_seen: float


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, server: "ForwarderServer") -> None:
        self.server = server

    def datagram_received(self, data: bytes, addr) -> None:
        self.server._datagram(data, addr)

    def error_received(self, exc: Exception) -> None:  # e.g. ICMP port unreachable
        log.warning("forwarder socket error: %s", exc)


class ForwarderServer:
    """See the module docstring."""

    def __init__(self, registry: Registry, sessions: SessionStore, region: Region, net_id: int,
                 on_records: Callable[[Result], object], host: str = "127.0.0.1", port: int = 0,
                 dedup_window_s: float = 0.2) -> None:
        self.registry = registry
        self.sessions = sessions
        self.region = region
        self.net_id = net_id
        self.on_records = on_records
        self.host = host
        self.port = port
        self.dedup = Deduplicator(dedup_window_s)
        self.processor = UplinkProcessor(registry, sessions)
        self.counters: dict[str, int] = {}
        self.forwarders: dict[str, ForwarderInfo] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None
        self._token = 0

    # ---- lifecycle -----------------------------------------------------------------------

    async def start(self) -> int:
        """Bind the UDP socket and start the release task; returns the bound port."""
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(self.host, self.port))
        self.port = self._transport.get_extra_info("sockname")[1]
        self._task = asyncio.create_task(self._release_loop())
        return self.port

    async def stop(self) -> None:
        """Stop the task and close the socket (open dedup groups are dropped). Idempotent."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    # ---- receive -------------------------------------------------------------------------

    def _inc(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n

    def _datagram(self, data: bytes, addr) -> None:
        self._inc("datagrams")
        try:
            msg = gwmp.decode(data)
        except gwmp.GwmpError as e:
            self._inc("malformed")
            log.warning("malformed datagram from %s:%s: %s", addr[0], addr[1], e)
            return
        if isinstance(msg, gwmp.PushData):
            self._push_data(msg, addr)
        elif isinstance(msg, gwmp.PullData):
            self._inc("pull-data")
            self._send(msg.ack().encode(), addr)
            self.forwarders[msg.gateway_eui.hex().upper()] = ForwarderInfo(addr, time.monotonic())
        elif isinstance(msg, gwmp.TxAck):
            self._inc("tx-ack")
            self._inc("tx-ack-ok" if msg.ok else "tx-ack-%s" % msg.error)
        else:  # PUSH_ACK / PULL_ACK / PULL_RESP: server-to-forwarder types
            self._inc("malformed")
            log.warning("unexpected datagram from %s:%s: %s", addr[0], addr[1],
                        type(msg).__name__)

    def _push_data(self, msg: gwmp.PushData, addr) -> None:
        self._inc("push-data")
        self._send(msg.ack().encode(), addr)
        if msg.errors:
            self._inc("rxpk-errors", len(msg.errors))
            log.warning("PUSH_DATA from %s:%s (%s) dropped entries: %s", addr[0], addr[1],
                        msg.gateway_eui.hex().upper(), "; ".join(msg.errors))
        now = time.monotonic()
        added = False
        for rxpk in msg.rxpk:
            self._inc("rxpk")
            if not rxpk.crc_ok:
                self._inc("crc-bad")
                continue
            self.dedup.add(rxpk.data, RadioMeta.from_rxpk(msg.gateway_eui, rxpk), now)
            added = True
        if added and self._wake is not None:
            self._wake.set()

    def _send(self, data: bytes, addr) -> None:
        if self._transport is not None:
            self._transport.sendto(data, addr)

    # ---- release and process -------------------------------------------------------------

    async def _release_loop(self) -> None:
        while True:
            deadline = self.dedup.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            self._wake.clear()
            if timeout is None or timeout > 0:
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout)
                except asyncio.TimeoutError:
                    pass
            for uplink in self.dedup.due(time.monotonic()):
                self._handle(uplink)
            await asyncio.sleep(0)

    def _handle(self, uplink: Uplink) -> None:
        self._inc("uplinks")
        try:
            r = self.processor.process(uplink, time.time())
            if r.kind == "join":
                self._join(uplink)
                return
            if not r.accepted:
                self._inc("uplink-%s" % r.reason)
                return
        except Exception:
            self._inc("process-error")
            log.exception("processing an uplink failed")
            return
        self._inc("records")
        try:
            self.on_records(r)
        except Exception:
            self._inc("on-records-error")
            log.exception("on_records callback failed")

    def _join(self, uplink: Uplink) -> None:
        j = handle_join_request(uplink.phy, self.registry, self.sessions, self.net_id,
                                self.region, time.time())
        if not j.accepted:
            self._inc("join-%s" % j.reason)
            return
        self._inc("joins-accepted")
        self._downlink_rx1(uplink, j.phy, j.rx1_delay_us)

    def _downlink_rx1(self, uplink: Uplink, phy: bytes, delay_us: int) -> None:
        # best() order: highest SNR, then RSSI, ties the earliest (sort is stable)
        for copy in sorted(uplink.copies, key=_rank, reverse=True):
            fw = self.forwarders.get(copy.forwarder)
            if fw is None:
                continue
            try:
                dr = self.region.dr_from_datr(copy.datr)
                freq, rx1_dr = self.region.rx1(copy.freq_hz, dr, 0)
                txpk = gwmp.Txpk.for_class_a(copy.tmst + delay_us, freq,
                                             self.region.datr_string(rx1_dr), JOIN_ACCEPT_CODR,
                                             JOIN_ACCEPT_POWE, phy)
            except (RegionError, gwmp.GwmpError) as e:
                self._inc("downlink-error")
                log.warning("no RX1 downlink via %s: %s", copy.forwarder, e)
                return
            self._token = (self._token + 1) & 0xFFFF
            self._send(gwmp.PullResp(self._token, txpk).encode(), fw.addr)
            self._inc("downlinks")
            return
        self._inc("no-downlink-path")
        log.warning("join-accept not sent: none of %s has sent PULL_DATA",
                    [c.forwarder for c in uplink.copies])
