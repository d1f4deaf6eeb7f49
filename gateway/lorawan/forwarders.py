"""Semtech UDP (GWMP) server for many packet forwarders: the gateway's radio-side I/O.

:class:`ForwarderServer` binds one UDP socket (asyncio DatagramProtocol) and:

* PUSH_DATA: answers PUSH_ACK at once (same token and version) to the sender, then feeds
  every decoded rxpk with ``stat == 1`` (CRC ok) into a :class:`gateway.lorawan.dedup.Deduplicator`
  as a :class:`ForwarderCopy` (RadioMeta plus the rxpk ``time`` string).  rxpk entries the
  decoder dropped count in ``rxpk-errors``, CRC-bad / no-CRC frames in ``crc-bad``.
* PULL_DATA: answers PULL_ACK and remembers the sender's address in ``forwarders``
  (gateway EUI upper-case hex -> :class:`ForwarderInfo` (addr, last_seen monotonic)); that
  address is where PULL_RESP for this forwarder goes (the forwarder's downstream socket).
* TX_ACK: counts ``tx-ack`` and ``tx-ack-ok`` or ``tx-ack-<ERROR>`` (e.g. ``tx-ack-TOO_LATE``)
  and settles the downlink with that PULL_RESP token (see Downlinks).
* Any datagram decode() rejects (GwmpError), or one of a type a forwarder never sends, counts
  ``malformed`` and logs one warning line with the peer address and the error; the server
  keeps serving.

A background task sleeps until ``Deduplicator.next_deadline()`` (or until a new copy arrives),
releases due groups and handles them together (``_handle_batch``), in the order that loses
nothing on a crash: ``UplinkProcessor.prepare_batch`` decides every frame against the counters in
memory; the records go to ``on_records`` and are made durable by ``flush_records``; then all
their frame counters are committed in one transaction; only then do replies (ACKs, commands,
MAC answers) leave.  A crash after the records but before the counters can at worst let a
replay of those frames through once (a duplicate, counted nowhere, dropped by consumers on
DevEUI + FCnt); never an accepted uplink lost.  Per result:

* accepted data results, and ``payload-error`` ones (good MIC, undecodable FRMPayload: the
  counter moved, the device will not resend it) -> ``on_records(result)``; the caller queues
  them.  Other rejections count as ``uplink-<reason>`` (payload-error counts there too).
* a confirmed uplink (accepted or payload-error) is answered with an ACK: UnconfirmedDown,
  FCtrl.ACK = 1, no FRMPayload, FCntDown reserved with SessionStore.next_fcnt_down.  When
  ``app_downlinks`` (gateway.lorawan.device_queue.DeviceQueue) holds a command for the device, any data
  uplink is answered with it (plus ACK when confirmed, FPending when more wait); a command
  whose downlink fails goes back to the front of the device's queue.
* MAC requests the network answers (LinkCheckReq, DeviceTimeReq; downlink.mac_answers) are
  answered in FOpts of that reply, which is sent for them alone too (``mac-answers``).
* a confirmed uplink repeated by its device (our ACK was lost) is ACKed again without being
  queued again (``retransmission-acked``; see ``_retransmission``).
* join-requests -> :func:`gateway.lorawan.join.handle_join_request`; an accepted join's join-accept
  goes out the same way, with JOIN_ACCEPT_DELAY1/2 instead of RECEIVE_DELAY1/2.

Downlinks (gateway/lorawan/downlink.py decides, this class sends): through the forwarder of the best
copy (``Uplink.best()`` order: SNR, then RSSI) or the next best that has sent PULL_DATA (none:
``no-downlink-path``); forwarders whose last PULL_DATA is older than STALE_PULL_S come last
(``stale-downlink-path`` when one is used anyway).  RX1 (``tmst + rx1 delay``, region.rx1
frequency/DR) when the real time since the first copy arrived plus ``rx1_margin_s`` is still
before the RX1 delay, else RX2 directly (``rx2-direct``; the region's rx2_frequency and
rx2_dr, ``tmst + rx2 delay``), else nothing (``downlink-late`` and ``downlink-failed``).  Each PULL_RESP is
remembered by token; its TX_ACK settles it: ok -> ``downlink-rx1`` / ``downlink-rx2``; an RX1 refusal in downlink.RETRY_IN_RX2 (TOO_LATE,
TOO_EARLY, COLLISION_*) -> one retry in RX2 through the same forwarder (``rx2-retry``); any
other refusal, or a refused RX2 -> ``downlink-failed``.  A TX_ACK whose token (and EUI) matches
nothing counts ``tx-ack-unmatched``; a PULL_RESP without TX_ACK for 15 s counts
``tx-ack-missing`` (v1 forwarders never send TX_ACK).

Per-device activity (``activity``, a :class:`gateway.lorawan.device_activity.DeviceActivity`): every
accepted join and every accepted or payload-error data uplink, for stats.json ``devices``.

Storage errors (SessionError) and on_records exceptions are logged and counted
(``process-error`` / ``on-records-error``), and never stop the task.

Counters (``counters``, a dict with missing keys meaning 0): datagrams, malformed, push-data,
pull-data, tx-ack, rxpk, rxpk-errors, crc-bad, uplinks, records, joins-accepted,
join-<reason>, uplink-<reason>, acks (ACK frames built), downlinks (PULL_RESPs sent),
rx2-direct, rx2-retry, downlink-rx1, downlink-rx2, downlink-failed, downlink-late,
no-downlink-path, stale-downlink-path, downlink-error, tx-ack-ok, tx-ack-<ERROR>,
tx-ack-unmatched, tx-ack-missing, retransmission-acked, mac-answers, process-error, on-records-error.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from gateway.lorawan import downlink as dl
from gateway.lorawan.dedup import Deduplicator, RadioMeta, Uplink, _rank
from gateway.lorawan.device_activity import DeviceActivity
from gateway.lorawan.device_queue import AppDownlink, DeviceQueue
from gateway.lorawan.join import handle_join_request
from gateway.lorawan.readings import parse_rxpk_time
from gateway.lorawan.registry import Registry
from gateway.lorawan.rejection_log import RejectionLog
from gateway.lorawan.sessions import SessionError, SessionStore
from gateway.lorawan.uplink import Result, UplinkProcessor
from protocol import gwmp
from protocol.lorawan import network_side as _network
from protocol.lorawan.region import Region, RegionError

__all__ = ["ForwarderServer", "ForwarderInfo", "ForwarderCopy", "JOIN_ACCEPT_POWE",
           "JOIN_ACCEPT_CODR"]

log = logging.getLogger(__name__)

RETRANSMISSION_REMEMBER_S = 60.0  # as long as the dedup remembers released frames
MAX_CONFIRMED = 4096
STALE_PULL_S = 60.0  # forwarders send PULL_DATA every ~10 s (Semtech default keepalive)
JOIN_ACCEPT_POWE = dl.DOWNLINK_POWE
JOIN_ACCEPT_CODR = dl.DOWNLINK_CODR


@dataclass(frozen=True, slots=True)
class ForwarderCopy(RadioMeta):
    """RadioMeta plus the rxpk ``time`` (ISO 8601 string as sent, None when absent): the
    forwarder's own reception time, used as the record time (gateway/lorawan/readings.py)."""

    time: str | None = None

    @classmethod
    def from_rxpk(cls, gateway_eui: bytes, rxpk) -> "ForwarderCopy":
        return cls(gateway_eui.hex().upper(), rxpk.rssi, rxpk.lsnr, rxpk.freq_hz, rxpk.datr,
                   rxpk.tmst, rxpk.time)

    def as_dict(self) -> dict:
        d = RadioMeta.as_dict(self)
        d["time"] = self.time
        return d


@dataclass(slots=True)
class _Confirmed:
    """A confirmed uplink we answered: its Result and when its last transmission arrived."""

    result: Result
    first_seen: float  # monotonic


MAX_COUNTED_FORWARDERS = 1024  # per-forwarder packet counters kept; more: "forwarders-uncounted"


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
                 dedup_window_s: float = 0.2, rx1_margin_s: float = 0.2,
                 rcvbuf_bytes: int = 0) -> None:
        self.registry = registry
        self.sessions = sessions
        self.region = region
        self.net_id = net_id
        self.on_records = on_records
        self.host = host
        self.port = port
        self.rx1_margin_s = rx1_margin_s
        self.rcvbuf_bytes = rcvbuf_bytes  # SO_RCVBUF to ask for (0: OS default); see rcvbuf
        self.rcvbuf = 0  # what the kernel granted (Linux reports twice the usable size)
        self.dedup = Deduplicator(dedup_window_s)
        self.processor = UplinkProcessor(registry, sessions)
        self.downlinks = dl.DownlinkTracker()
        self.app_downlinks: DeviceQueue | None = None  # set to send operator commands
        self._confirmed: OrderedDict[bytes, _Confirmed] = OrderedDict()  # for retransmissions
        self.counters: dict[str, int] = {}
        self.activity = DeviceActivity()  # per DevEUI, for the technician (stats.json devices)
        self.rejections = RejectionLog(log)
        # Called after a release's records were handed to on_records and before any reply to
        # them goes out, so the caller can make them durable first: an ACK tells the device
        # its confirmed uplink is delivered, and it will not send it again.
        self.flush_records: Callable[[], object] | None = None
        self._replies: list | None = None  # replies held until flush_records returned
        self.forwarders: dict[str, ForwarderInfo] = {}
        # per forwarder EUI: [rxpk received, PULL_RESP sent]; bounded (EUIs come off the wire)
        self.packets: dict[str, list[int]] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None

    # ---- lifecycle -----------------------------------------------------------------------

    async def start(self) -> int:
        """Bind the UDP socket and start the release task; returns the bound port."""
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(self.host, self.port))
        self.port = self._transport.get_extra_info("sockname")[1]
        sock = self._transport.get_extra_info("socket")
        if self.rcvbuf_bytes:
            # bursts of PUSH_DATA queue here while a release batch is processed; the kernel
            # caps the request at net.core.rmem_max
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf_bytes)
            except OSError as e:
                log.warning("cannot set SO_RCVBUF to %d: %s", self.rcvbuf_bytes, e)
        self.rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
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
            self._tx_ack(msg)
        else:  # PUSH_ACK / PULL_ACK / PULL_RESP: server-to-forwarder types
            self._inc("malformed")
            log.warning("unexpected datagram from %s:%s: %s", addr[0], addr[1],
                        type(msg).__name__)

    def _count_packets(self, eui: str, which: int, n: int) -> None:
        c = self.packets.get(eui)
        if c is None:
            if len(self.packets) >= MAX_COUNTED_FORWARDERS:
                self._inc("forwarders-uncounted")
                return
            c = self.packets[eui] = [0, 0]
        c[which] += n

    def _push_data(self, msg: gwmp.PushData, addr) -> None:
        self._inc("push-data")
        self._send(msg.ack().encode(), addr)
        if msg.errors:
            self._inc("rxpk-errors", len(msg.errors))
            log.warning("PUSH_DATA from %s:%s (%s) dropped entries: %s", addr[0], addr[1],
                        msg.gateway_eui.hex().upper(), "; ".join(msg.errors))
        now = time.monotonic()
        added = False
        if msg.rxpk:
            self._count_packets(msg.gateway_eui.hex().upper(), 0, len(msg.rxpk))
        for rxpk in msg.rxpk:
            self._inc("rxpk")
            if not rxpk.crc_ok:
                self._inc("crc-bad")
                continue
            copy = ForwarderCopy.from_rxpk(msg.gateway_eui, rxpk)
            if self._confirmed:
                self._retransmission(rxpk.data, copy, now)
            self.dedup.add(rxpk.data, copy, now)
            added = True
        if added and self._wake is not None:
            self._wake.set()

    def _retransmission(self, phy: bytes, copy: ForwarderCopy, now: float) -> None:
        """ACK again a confirmed uplink the device sent again because our ACK did not reach it.

        A device repeats an unacknowledged confirmed frame byte for byte (same FCnt), which the
        dedup drops and the counter check would reject as a replay.  It is answered with a new
        ACK (next FCntDown) and not queued again, if it is the device's latest accepted frame
        and comes at least RECEIVE_DELAY2 after the transmission last answered (earlier: a late
        copy of that one).  Counted as ``retransmission-acked``.
        """
        c = self._confirmed.get(phy)
        if c is None or now - c.first_seen < _network.RECEIVE_DELAY2_US / 1e6:
            return
        if now - c.first_seen > RETRANSMISSION_REMEMBER_S:
            del self._confirmed[phy]
            return
        try:
            s = self.sessions.get_by_dev_addr(c.result.dev_addr)
        except SessionError:
            return
        if s is None or s.fcnt_up != c.result.fcnt:
            return  # the device has moved on: this is a replay, not a retransmission
        c.first_seen = now
        self._inc("retransmission-acked")
        self._reply(Uplink(phy, [copy], now), c.result, None)

    def _remember_confirmed(self, uplink: Uplink, r: Result) -> None:
        phy = bytes(uplink.phy)
        self._confirmed[phy] = _Confirmed(r, uplink.first_seen)
        self._confirmed.move_to_end(phy)
        while len(self._confirmed) > MAX_CONFIRMED:
            self._confirmed.popitem(last=False)

    def _send(self, data: bytes, addr) -> None:
        if self._transport is not None:
            self._transport.sendto(data, addr)

    # ---- release and process -------------------------------------------------------------

    async def _release_loop(self) -> None:
        while True:
            deadline = self.dedup.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            if timeout is None and len(self.downlinks):
                timeout = 1.0  # wake up to expire PULL_RESPs whose TX_ACK never comes
            self._wake.clear()
            if timeout is None or timeout > 0:
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout)
                except asyncio.TimeoutError:
                    pass
            ups = self.dedup.due(time.monotonic())
            if ups:
                self._handle_batch(ups)
            self._expire_downlinks()
            await asyncio.sleep(0)

    def _handle_batch(self, ups: list[Uplink]) -> None:
        """Every uplink released together, in the order that loses nothing on a crash: decide
        them against the counters in memory (UplinkProcessor.prepare_batch), hand the records
        over and have them stored (``flush_records``), commit all their frame counters in one
        transaction, and only then reply (ACKs, commands, MAC answers).  On a failure before
        anything was decided: one by one (each counter committed first), so each is counted."""
        self._inc("uplinks", len(ups))
        prepared = None
        try:
            prepared = self.processor.prepare_batch(ups, time.time())
            results = prepared.results
        except Exception:
            log.exception("processing %d uplinks together failed; retrying one by one", len(ups))
            results = []
            for uplink in ups:
                try:
                    results.append(self.processor.process(uplink, time.time()))
                except Exception:
                    self._inc("process-error")
                    log.exception("processing an uplink failed")
                    results.append(None)
        self._replies = []
        try:
            for uplink, r in zip(ups, results):
                if r is not None:
                    self._result(uplink, r)
        finally:
            replies, self._replies = self._replies, None
        if self.flush_records is not None:
            try:
                self.flush_records()
            except Exception:
                self._inc("on-records-error")
                log.exception("storing the records of %d uplinks failed", len(ups))
        if prepared is not None:
            try:
                late = prepared.commit_counters()
            except Exception:  # SessionError: the records are stored, the counters are not
                self._inc("counter-commit-error")
                log.exception("frame counters of %d uplinks not stored: a replay of them "
                              "would be accepted once more", len(ups))
                late = []
            if late:
                # decided fresh in memory, refused by the store (the device rejoined meanwhile):
                # their records are queued already, as duplicates, never as losses
                self._inc("counter-refused", len(late))
                log.warning("%d uplinks queued although the store refused their counters",
                            len(late))
        for reply in replies:
            self._reply(*reply)

    def _result(self, uplink: Uplink, r: Result) -> None:
        try:
            if r.kind == "join":
                self._join(uplink)
                return
        except Exception:
            self._inc("process-error")
            log.exception("processing a join-request failed")
            return
        if not r.accepted:
            self._inc("uplink-%s" % r.reason)
            if r.reason != "payload-error":
                self.rejections.rejected("uplink", r.reason, "DevAddr %s FCnt %s via %s%s" % (
                    "?" if r.dev_addr is None else "%08X" % r.dev_addr, r.fcnt,
                    ",".join(m.forwarder for m in uplink.copies),
                    "" if not r.error else " (%s)" % r.error))
                return
        self.activity.uplink(r, time.time())
        if r.accepted:
            self._inc("records")
        else:
            log.warning("uplink from %s FCnt %s: payload does not decode (%s); queued as hex",
                        r.dev_eui.hex().upper(), r.fcnt, r.error)
        try:
            self.on_records(r)
        except Exception:
            self._inc("on-records-error")
            log.exception("on_records callback failed")
        app = None
        if self.app_downlinks is not None and r.dev_eui is not None:
            app = self.app_downlinks.pop(r.dev_eui)
        answers = []
        if r.mac_commands:
            t = parse_rxpk_time(getattr(uplink.best(), "time", None))
            if t is None:  # the gateway clock when the first copy arrived
                t = time.time() - (time.monotonic() - uplink.first_seen)
            answers = dl.mac_answers(r.mac_commands, uplink.copies, t, self.region)
            self._inc("mac-answers", len(answers))
        if r.confirmed:
            self._remember_confirmed(uplink, r)
        if r.confirmed or app is not None or answers:
            if self._replies is not None:  # inside a release: after its records are stored
                self._replies.append((uplink, r, app, answers))
            else:
                self._reply(uplink, r, app, answers)

    def _reply(self, uplink: Uplink, r: Result, app: AppDownlink | None,
               answers: list = ()) -> None:
        """The class-A answer to a data uplink: ACK, the device's next queued payload and/or
        answers to its MAC requests."""
        more = app is not None and self.app_downlinks.pending(r.dev_eui) > 0
        try:
            phy = dl.data_down_frame(self.sessions, r.dev_addr, r.confirmed,
                                     None if app is None else app.fport,
                                     b"" if app is None else app.payload, more, answers)
        except SessionError as e:
            self._inc("downlink-error")
            log.warning("no downlink for %08X: %s", r.dev_addr, e)
            if app is not None:
                self.app_downlinks.push_front(r.dev_eui, app)
            return
        if r.confirmed:
            self._inc("acks")
        self._downlink(uplink, phy, _network.RECEIVE_DELAY1_US, _network.RECEIVE_DELAY2_US,
                       "ack" if app is None else "downlink", r.dev_eui, app)

    def _join(self, uplink: Uplink) -> None:
        j = handle_join_request(uplink.phy, self.registry, self.sessions, self.net_id,
                                self.region, time.time())
        if not j.accepted:
            self._inc("join-%s" % j.reason)
            self.rejections.rejected("join-request", j.reason, "DevEUI %s via %s" % (
                "?" if j.dev_eui is None else j.dev_eui.hex().upper(),
                ",".join(m.forwarder for m in uplink.copies)))
            return
        self._inc("joins-accepted")
        self.activity.joined(j.dev_eui, j.session.dev_addr, time.time())
        self._downlink(uplink, j.phy, j.rx1_delay_us, j.rx2_delay_us, "join-accept")

    # ---- downlinks -----------------------------------------------------------------------

    def _downlink(self, uplink: Uplink, phy: bytes, rx1_delay_us: int, rx2_delay_us: int,
                  what: str, dev_eui: bytes | None = None, app: AppDownlink | None = None) -> None:
        window = dl.choose_window(time.monotonic() - uplink.first_seen, rx1_delay_us,
                                  rx2_delay_us, self.rx1_margin_s)
        if window is None:
            self._inc("downlink-late")
            self._failed(dev_eui, app)
            log.warning("%s not sent: too late even for RX2", what)
            return
        if window == "rx2":
            self._inc("rx2-direct")
        # best() order: highest SNR, then RSSI, ties the earliest (sort is stable); forwarders
        # whose PULL_DATA keep-alives stopped (a dead or disconnected one) only as a last resort
        now = time.monotonic()
        ranked = sorted(uplink.copies, key=_rank, reverse=True)
        fresh = [c for c in ranked if c.forwarder in self.forwarders
                 and now - self.forwarders[c.forwarder].last_seen <= STALE_PULL_S]
        for copy in fresh + ranked:
            if copy.forwarder in self.forwarders:
                if copy not in fresh:
                    self._inc("stale-downlink-path")
                p = dl.Pending(0, copy.forwarder, copy, bytes(phy), window, rx1_delay_us,
                               rx2_delay_us, what, time.monotonic(), dev_eui, app)
                self._send_pending(p)
                return
        self._inc("no-downlink-path")
        self._failed(dev_eui, app)
        log.warning("%s not sent: none of %s has sent PULL_DATA", what,
                    [c.forwarder for c in uplink.copies])

    def _send_pending(self, p: dl.Pending) -> None:
        fw = self.forwarders.get(p.forwarder)
        try:
            txpk = dl.class_a_txpk(self.region, p.copy, p.phy, p.window, p.rx1_delay_us,
                                   p.rx2_delay_us)
        except (RegionError, gwmp.GwmpError) as e:
            self._inc("downlink-error")
            self._failed(p.dev_eui, p.app)
            log.warning("no %s downlink via %s: %s", p.window.upper(), p.forwarder, e)
            return
        p.token = self.downlinks.next_token()
        p.sent = time.monotonic()
        for old in self.downlinks.add(p):
            self._inc("tx-ack-missing")
        self._send(gwmp.PullResp(p.token, txpk).encode(), fw.addr)
        self._inc("downlinks")
        self._count_packets(p.forwarder, 1, 1)
        log.debug("%s sent in %s via %s (token %d, tmst %d)", p.what, p.window.upper(),
                  p.forwarder, p.token, txpk.tmst)

    def _tx_ack(self, msg: gwmp.TxAck) -> None:
        p = self.downlinks.take(msg.token, msg.gateway_eui.hex().upper())
        if p is None:
            self._inc("tx-ack-unmatched")
            return
        if msg.ok:
            self._inc("downlink-%s" % p.window)
            if p.app is not None and self.app_downlinks is not None:
                self.app_downlinks.sent(p.dev_eui, p.app)
            return
        if p.window == "rx1" and msg.error in dl.RETRY_IN_RX2 and p.forwarder in self.forwarders:
            self._inc("rx2-retry")
            log.info("%s refused in RX1 by %s (%s); retrying in RX2", p.what, p.forwarder, msg.error)
            p.window = "rx2"
            self._send_pending(p)
            return
        self._failed(p.dev_eui, p.app)
        log.warning("%s refused in %s by %s: %s", p.what, p.window.upper(), p.forwarder, msg.error)

    def _failed(self, dev_eui: bytes | None, app: AppDownlink | None) -> None:
        """A downlink that will not be sent; its application payload waits for the next uplink."""
        self._inc("downlink-failed")
        if app is not None and self.app_downlinks is not None:
            self.app_downlinks.push_front(dev_eui, app)

    def _expire_downlinks(self) -> None:
        for p in self.downlinks.expire(time.monotonic()):
            self._inc("tx-ack-missing")
            if p.app is not None and self.app_downlinks is not None:
                # a v1 forwarder never confirms: the device's own ack will say if it arrived
                self.app_downlinks.sent(p.dev_eui, p.app)
