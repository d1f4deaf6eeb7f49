"""A tiny class-A stand-in firmware for simulator tests that must not depend on the firmware's
application (it still drives the board's chip through the firmware's real radio driver):
transmits a data frame (DevAddr = the low 32 bits of cfg dev_eui, FCnt = frames sent)
every `period_ms`, then opens RX1 one second after the end of the frame
and records what its radio reports."""

from protocol.lorawan import airtime
from sim.board import ticks_diff, TICKS_PERIOD


class StandInApp:
    period_ms = 10000
    rx1_delay_ms = 1000
    window_ms = 30

    def __init__(self, machine, esp32, cfg, radio, sleep_ms):
        if radio is None:  # the board's own chip, through the firmware's real driver
            from firmware.radio_board import DEFAULT, build_radio

            radio = build_radio(machine, {"board": cfg.get("board", DEFAULT)}, sleep_ms)
        self.radio = radio
        self.cfg = cfg
        self.sf = cfg.get("sf", 7)
        self.freq = cfg.get("freq_hz", 868100000)
        self.dev_addr = int(cfg.get("dev_eui", "0")[-8:], 16)
        self.next_tx = None
        self.rx1_at = None
        self.events = []
        self.sent = 0
        self.measured = None

    def poll(self, now):
        ev = self.radio.poll()
        while ev:
            self.events.append((now, ev))
            if ev[0] == "tx_done":
                self.rx1_at = (now + self.rx1_delay_ms) % TICKS_PERIOD
            ev = self.radio.poll()
        if self.rx1_at is not None and ticks_diff(now, self.rx1_at) >= 0:
            self.radio.receive(self.freq, self.sf, 125000, self.window_ms)
            self.rx1_at = None
        if self.next_tx is None:
            self.next_tx = (now + self.cfg.get("first_tx_ms", 0)) % TICKS_PERIOD
        if ticks_diff(now, self.next_tx) >= 0:
            # an unconfirmed data frame: MHDR, DevAddr, FCtrl, FCnt, FPort 1, 2 bytes, MIC
            data = (b"\x40" + self.dev_addr.to_bytes(4, "little") + b"\x00"
                    + (self.sent & 0xFFFF).to_bytes(2, "little") + b"\x01"
                    + self.sent.to_bytes(2, "little") + bytes(4))
            self.radio.transmit(self.freq, self.sf, 125000, 14, data)
            self.sent += 1
            self.next_tx = (self.next_tx + self.period_ms) % TICKS_PERIOD
            toa_ms = -(-airtime.time_on_air_us(len(data), self.sf, 125000) // 1000)
            return (now + toa_ms) % TICKS_PERIOD
        wake = self.next_tx
        if self.rx1_at is not None and ticks_diff(self.rx1_at, wake) < 0:
            wake = self.rx1_at
        return wake
