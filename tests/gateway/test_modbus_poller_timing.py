"""The poller's RTU timing guarantees, judged on the pseudo-terminal the gateway's port is
joined to: a request never leaves before the bus has been quiet for t3.5 (after a reply,
after a corrupted reply, after a silent meter), and the t3.5 wait it uses
(gateway.modbus.deadline_sleep) never returns early. Lower bounds only: a slow machine makes the gaps
longer, never shorter, so nothing here depends on how fast the machine is."""

from __future__ import annotations

import asyncio
import os

import pytest

from gateway.modbus import deadline_sleep
from gateway.modbus.deadline_sleep import DeadlineSleep
from gateway.modbus.plan import Read
from gateway.modbus.poller import BusConfig, BusPoller, MeterConfig
from protocol.modbus import rtu
from tests.gateway.modbus_servers import MapDevice, SerialLine, tcp_server
from tests.gateway.test_modbus_poller import POINTS, fast, meter_values, run_until


class TimedLine(SerialLine):
    """A SerialLine that stamps every chunk it relays, (loop time, "gw" or "bus"), and hands
    requests to the meters `turnaround_s` late, as a slave that takes its time to answer (so
    the reply, not the request's own wire time, is what the next request must wait for)."""

    def __init__(self, directory, turnaround_s=0.02):
        self.chunks = []
        self.turnaround_s = turnaround_s
        super().__init__(directory)

    def _from_gateway(self):
        try:
            data = os.read(self._gw[0], 4096)
        except OSError:
            return
        self.chunks.append((self._loop.time(), "gw"))
        self._loop.call_later(self.turnaround_s, os.write, self._bus[0], data)

    def _from_bus(self):
        self.chunks.append((self._loop.time(), "bus"))
        super()._from_bus()


def gaps_before_requests(chunks):
    """For every chunk the gateway sent: the silence before it (since the last chunk of
    anyone's); the first request has none."""
    out = []
    for (t0, _), (t1, side) in zip(chunks, chunks[1:]):
        if side == "gw":
            out.append(t1 - t0)
    return out


@pytest.mark.parametrize("baud", [9600, 19200])
def test_requests_leave_t35_after_the_last_byte_on_the_bus(tmp_path, baud):
    async def main():
        line = TimedLine(str(tmp_path))
        await line.serve({1: MapDevice(meter_values(1)), 2: MapDevice(meter_values(2))},
                         baudrate=baud)
        # 9 never answers (timeouts), and some replies arrive corrupted (retries)
        cfg = BusConfig("rs485-t", tuple(MeterConfig(a, POINTS) for a in (1, 9, 2)), kind="rtu",
                        port=line.port, baudrate=baud,
                        **fast(timeout_s=0.05, backoff_min_s=0.01, backoff_max_s=0.01))
        p = BusPoller(cfg, lambda items: None)
        polled = []
        p.on_poll = lambda a, values: polled.append(a)
        line.corrupt(2)
        try:
            await run_until(p, lambda: len(polled) >= 12 and p.meters[1].stats.timeouts >= 2)
        finally:
            await line.close()
        return p, line.chunks

    p, chunks = asyncio.run(asyncio.wait_for(main(), 30))
    t35 = rtu.t35_us(baud, rtu.char_bits("N", 1)) / 1e6
    gaps = gaps_before_requests(chunks)
    assert len(gaps) >= 20
    assert min(gaps) >= t35, f"a request left {min(gaps) * 1e6:.0f} us after the bus was busy"
    st = p.stats()["meters"]
    assert st[9]["timeouts"] >= 2  # gaps after silence were judged too
    assert st[1]["retries"] + st[2]["retries"] >= 1  # and after a corrupted reply


def test_a_two_register_point_is_one_transaction_per_poll():
    class Counting(MapDevice):
        def getValues(self, func_code, address, count=1):
            self.asked = getattr(self, "asked", []) + [(func_code, address, count)]
            return super().getValues(func_code, address, count)

    async def main():
        dev = Counting(meter_values(1))
        server, port = await tcp_server({1: dev})
        cfg = BusConfig("tcp-t", (MeterConfig(1, ("voltage_l1",)),), kind="tcp", tcp_port=port,
                        **fast())
        p = BusPoller(cfg, lambda items: None)
        seen = []
        p.on_poll = lambda a, values: seen.append(values)
        try:
            await run_until(p, lambda: len(seen) >= 5)
        finally:
            await server.shutdown()
        return p, dev, seen

    p, dev, seen = asyncio.run(asyncio.wait_for(main(), 20))
    assert p.meters[0].plan.reads == (Read(4, 0x0000, 2),)
    assert set(dev.asked) == {(4, 0x0000, 2)}
    st = p.stats()["meters"][1]
    # one request per poll (+ the one in flight when the poller was stopped)
    assert st["polls"] <= st["transactions"] <= st["polls"] + 1
    # each retry after a timeout (a loaded machine) reaches the server once more
    assert st["transactions"] <= len(dev.asked) <= st["transactions"] + st["retries"] + 1
    assert all(v == {"voltage_l1": meter_values(1)["voltage_l1"]} for v in seen)


@pytest.mark.parametrize("precise", [True, False])
def test_deadline_sleep_never_returns_early(monkeypatch, precise):
    if not precise:
        monkeypatch.setattr(deadline_sleep, "_timerfd", lambda: None)

    async def main():
        loop = asyncio.get_running_loop()
        s = DeadlineSleep()
        used = s.precise
        late = []
        try:
            for i in range(60):
                when = loop.time() + (i % 7) * 0.0004 + (0.0 if i % 5 else -0.001)
                await s.until(when)
                late.append(loop.time() - when)
            # a wait cancelled half-way leaves its timer armed: the next wait is not cut short
            w = asyncio.ensure_future(s.until(loop.time() + 0.002))
            await asyncio.sleep(0.0005)
            w.cancel()
            when = loop.time() + 0.02
            await s.until(when)
            late.append(loop.time() - when)
        finally:
            s.close()
        return used, late

    used, late = asyncio.run(asyncio.wait_for(main(), 10))
    if precise:
        made = deadline_sleep._timerfd()
        assert used == (made is not None)
        if made is not None:
            os.close(made[0])
    else:
        assert used is False
    assert min(late) >= 0
