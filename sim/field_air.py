"""FieldAir: the air around field boards (sim/field_board.py), in real time, with emulated
packet forwarders on it speaking GWMP over UDP to a real gateway.

    with FieldAir(("127.0.0.1", 1700)) as air:
        air.add(board)            # its radio calls now reach the medium

Why real time: a field board runs its firmware free on its own clock (a technician's board
on the bench), so the medium, the forwarders' concentrator clocks (`tmst`) and the RX windows
must run at the wall clock's pace too. It is the city's machinery (sim.air.Air on a
sim.clock.VirtualClock, sim.radio.Medium, sim.forwarder.Forwarder) with the clock at speed 1,
no idle jumps and no barriers, on an asyncio loop in a thread of its own. Each radio call a
board's VM makes is carried out on that loop at the current instant, and the board is then
looked at (its frame goes on the air, its RX window may lock on a downlink).
"""

import asyncio
import threading

from protocol.lorawan.region import region
from sim.air import Air
from sim.clock import VirtualClock
from sim.forwarder import Forwarder
from sim.radio import Medium
from sim.sim_radio import SimRadio, carry_out

FORWARDER_EUI = "AA555A0000000F01"


class FieldAir:
    """gateway_addr: the gateway's GWMP (host, port); forwarders: their (x, y) in metres."""

    def __init__(self, gateway_addr, region_name="EU868", forwarders=((40.0, 0.0),), seed=0):
        self.clock = VirtualClock(speed=1.0, grace_s=0.0, jump_idle=False)
        self.medium = Medium(model="lorasim", seed=seed)
        self.air = Air(self.medium, self.clock, barriers="none")
        self.forwarders = []
        for i, (x, y) in enumerate(forwarders):
            fwd = Forwarder("%s%02X" % (FORWARDER_EUI[:-2], i + 1), x, y, self.clock,
                            tuple(gateway_addr), seed=seed, band=region(region_name).band)
            self.forwarders.append(fwd)
            self.air.add_forwarder(fwd)
        self._loop = asyncio.new_event_loop()
        self._thread = None
        self._task = None
        self._started = threading.Event()

    def add(self, board):
        """Put a FieldBoard on the air (before or while it runs)."""
        def put():
            board.radio = SimRadio(board.name)
            self.air.add_board(board)
        self._in_loop(put)
        board.radio_handler = self._radio_call

    # ---- the loop ------------------------------------------------------------------------

    def start(self):
        self._thread = threading.Thread(target=self._run, name="field-air", daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the air did not start")
        return self

    def _run(self):
        asyncio.set_event_loop(self._loop)

        async def main():
            for f in self.forwarders:
                await f.start()
            self._started.set()
            self._task = asyncio.current_task()
            try:
                while True:
                    await self.air.run_until(self.clock.now_us + 3600 * 10 ** 6)
            except asyncio.CancelledError:
                pass
            finally:
                for f in self.forwarders:
                    await f.stop()

        self._loop.run_until_complete(main())

    def _in_loop(self, fn):
        """fn() on the air's loop (at once when it is not running yet); returns its value."""
        if self._thread is None or not self._thread.is_alive():
            return fn()
        done = threading.Event()
        out = []

        def call():
            try:
                out.append((True, fn()))
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                out.append((False, e))
            done.set()

        self._loop.call_soon_threadsafe(call)
        if not done.wait(10):
            raise RuntimeError("the air's loop did not answer")
        ok, value = out[0]
        if not ok:
            raise value
        return value

    def close(self):
        if self._thread is not None and self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
            self._thread.join(10)
        self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    # ---- a board's radio call (from its link thread) -------------------------------------

    def _radio_call(self, board, fn, a):
        return self._in_loop(lambda: self._carry_out(board, fn, a))

    def _carry_out(self, board, fn, a):
        self.clock.step(self.clock.now_us + 3600 * 10 ** 6, self.clock.real())  # to real now
        now = self.clock.now_ms
        board.radio.now_ms = now
        try:
            return carry_out(board.radio, fn, a)
        finally:
            self.air.wake(board, now)
            self.clock.poke()

