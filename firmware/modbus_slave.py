"""Modbus RTU slave of the AMI meter on a half-duplex RS-485 UART with a driver-enable (DE) pin.

Poll-driven, like the rest of the firmware: `poll(now_us) -> next_wake_us` reads what the UART
has, cuts frames by silence with protocol.modbus.rtu.RtuDeframer (t1.5 / t3.5), answers, and
drives DE; it never blocks and never reads a clock. Why not an asyncio StreamReader over the
UART: a stream hands over bytes without the times they arrived, and RTU frames are delimited
by time alone. On the device firmware.meter_loop polls it next to the metering application,
sleeping until the returned tick (each poll timestamps what the UART buffered since the previous
one, so polls must come at least every character time or so; an idle slave asks to be polled
again after `idle_us`, one character time by default).

DE: raised just before the reply is handed to the UART, dropped only after the UART says its
transmitter is done (`txdone()`), the frame's own wire time has passed, and one more character
time (the last stop bit has left the pins; modbus.md). Bytes that arrive while DE is high are
discarded (RE is tied to DE on the usual transceivers: the line is ours).

The register map is protocol.modbus.register_map (the layout alone: the descriptions in
protocol.modbus.registers are the gateway's). Values come from a data source (the meter
application) with:
    measurements() -> dict   register names -> values: floats of the SDM630 block ("voltage_l1",
                             "current_l1", "power_l1", "power_factor_l1", "frequency", ...) and
                             the exact ints "energy_import_wh" / "energy_export_wh", which must
                             be the durable (served) totals, never RAM-only ones. The float kWh
                             registers are derived here from the exact Wh when not given.
    relay_closed() -> bool   the disconnect relay's state
    set_relay(closed)        open (False) / close (True) the relay; called only after an arm
Identity (serial, firmware version) is given to the constructor.

Configuration writes (address, baud, parity) are validated, persisted (store.save) before the
reply, and applied only after the reply has left the line: the answer still uses the old
settings. A broadcast (address 0) write is applied without a reply, except a change of slave
address, which would give every meter on the bus the same one (ignored, counted).
"""

from protocol.modbus import pdu, register_map, rtu
from protocol.modbus.line import DEFAULTS, PARITY_CODES
from firmware.ticks import TICKS_PERIOD

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_STORE_KEYS = const(("mb_addr", "mb_baud", "mb_par"))  # NVS keys of holding registers 0x3000..2

_TX_STUCK_US = const(100000)  # a UART that never says txdone must not hold the bus (DE) for ever

_IDLE = const(0)
_REPLY_DUE = const(1)  # a reply is waiting for its turnaround delay
_SENDING = const(2)  # DE high, the UART shifts the reply out
_TAIL = const(3)  # transmitter done; DE stays high one more character time


def _diff(a, b):
    return ((a - b + (TICKS_PERIOD >> 1)) & (TICKS_PERIOD - 1)) - (TICKS_PERIOD >> 1)


def _add(t, d):
    return (t + d) & (TICKS_PERIOD - 1)


class ModbusSlave:
    """One meter's Modbus RTU slave. Counters (ints): requests (frames for us or broadcast with a
    good CRC), responses, broadcasts, exceptions, bad_crc, frame_errors, ignored (good frames
    for another slave), dropped_rx (bytes heard while transmitting), resynced (requests found
    at the end of a bad frame, see _resync), and the deframer's gap_errors / overruns via
    counters()."""

    def __init__(self, uart, de_pin, source, store=None, serial=0, firmware=(0, 0, 0),
                 reply_delay_us=0, idle_us=None):
        self.uart = uart
        self.de = de_pin
        self.source = source
        self.store = store
        self.serial = serial
        self.firmware = firmware
        self.reply_delay_us = reply_delay_us
        self._idle_us = idle_us
        cfg = []
        for i in range(3):
            v = store.load(_STORE_KEYS[i]) if store is not None else None
            if v is None or v not in register_map.ALLOWED[i]:
                v = DEFAULTS[register_map.HOLDING[i]]
            cfg.append(v)
        self.address, self.baud_code, self.parity = cfg
        self._pending = None  # config to apply once the reply has left: (address, baud, parity)
        self._arm = register_map.RelayArm(ticks_period=TICKS_PERIOD)
        self._rxmv = memoryview(bytearray(rtu.MAX_ADU))  # the UART's bytes, read in place
        self._reply = None
        self._state = _IDLE
        self._at = 0  # _REPLY_DUE: when to send; _SENDING: wire end; _TAIL: when DE drops
        self.requests = 0
        self.responses = 0
        self.broadcasts = 0
        self.exceptions = 0
        self.bad_crc = 0
        self.frame_errors = 0
        self.ignored = 0
        self.dropped_rx = 0
        self.resynced = 0
        self.last_exception = 0
        self.de.value(0)
        self._apply_line()

    # ------------------------------------------------------------ line settings

    def line(self):
        """(baud, parity char "N"/"E"/"O", stop bits) in force now."""
        code = PARITY_CODES[self.parity]
        return self.baud_code * 100, code[1], code[2]

    def _apply_line(self):
        baud, par, stop = self.line()
        # machine.UART's parity for each code of line.PARITY_CODES (8N1, 8E1, 8O1, 8N2)
        self.uart.init(baud, bits=8, parity=(None, 0, 1, None)[self.parity], stop=stop)
        self.char_bits = rtu.char_bits(par, stop)
        self.char_us = rtu.char_time_us(baud, self.char_bits)
        old = getattr(self, "_deframer", None)
        self._deframer = rtu.RtuDeframer(baud, self.char_bits, ticks_period=TICKS_PERIOD)
        if old is not None:
            self._deframer.gap_errors = old.gap_errors
            self._deframer.overruns = old.overruns
            self._deframer.frames = old.frames

    def busy(self):
        """True while a reply waits for its turn or is on the line (DE high)."""
        return self._state != _IDLE

    def counters(self):
        d = self._deframer
        return {
            "requests": self.requests, "responses": self.responses,
            "broadcasts": self.broadcasts, "exceptions": self.exceptions,
            "bad_crc": self.bad_crc, "frame_errors": self.frame_errors,
            "ignored": self.ignored, "dropped_rx": self.dropped_rx, "resynced": self.resynced,
            "gap_errors": d.gap_errors, "overruns": d.overruns,
        }

    # ------------------------------------------------------------ poll

    def poll(self, now_us):
        """Do what is due at tick now_us (microseconds, wrapping like time.ticks_us());
        returns the tick at which to poll again."""
        st = self._state
        if st == _SENDING and _diff(now_us, self._at) >= 0 and (
                self.uart.txdone() or _diff(now_us, self._at) >= _TX_STUCK_US):
            st = self._state = _TAIL
            self._at = _add(now_us, self.char_us)
        if st == _TAIL and _diff(now_us, self._at) >= 0:
            self.de.value(0)
            st = self._state = _IDLE
            if self._pending is not None:
                self._apply_pending()
        self._read(now_us, st)
        if st == _IDLE or st == _REPLY_DUE:
            for adu in self._deframer.poll(now_us):
                self._handle(adu, now_us)
            st = self._state
        if st == _REPLY_DUE and _diff(now_us, self._at) >= 0:
            self._send(now_us)
            st = self._state
        return self._next_wake(now_us, st)  # sample the UART about once a character

    def _read(self, now_us, st):
        uart = self.uart
        while uart.any():
            n = uart.readinto(self._rxmv)
            if not n:
                break
            if st == _SENDING or st == _TAIL:
                self.dropped_rx += n
            else:
                self._deframer.feed(self._rxmv[:n], now_us)

    def due(self):
        """The tick of the next thing the slave must do by time (end a frame by silence, send,
        drop DE), or None: then only new bytes on the UART give it work."""
        if self._state == _IDLE:
            return self._deframer.deadline()
        return self._at

    def _next_wake(self, now_us, st):
        wake = _add(now_us, self._idle_us or self.char_us)
        d = self.due()
        if d is not None and _diff(d, wake) < 0:
            wake = d if _diff(d, now_us) > 0 else now_us
        return wake

    def _send(self, now_us):
        data = self._reply
        self._reply = None
        self.de.value(1)
        self.uart.write(data)
        self.responses += 1
        self._state = _SENDING
        self._at = _add(now_us, rtu.frame_time_us(len(data), self.baud_code * 100, self.char_bits))

    # ------------------------------------------------------------ requests

    def _handle(self, frame, now_us):
        try:
            address, body = rtu.decode_frame(frame)
        except rtu.CrcError:
            self.bad_crc += 1
            self._resync(frame, now_us)
            return
        except rtu.FrameError:
            self.frame_errors += 1
            return
        broadcast = address == rtu.BROADCAST
        if not broadcast and address != self.address:
            self.ignored += 1
            return
        self.requests += 1
        if broadcast:
            self.broadcasts += 1
        try:
            resp = self._serve(body, pdu.parse_request(body), now_us, broadcast)
        except pdu.ModbusError as e:
            code = pdu.exception_code(body, e)
            resp = None if code is None else pdu.encode_exception(body[0], code)
        except Exception:  # a data source or store failing must not take the bus down
            fc = body[0]
            resp = pdu.encode_exception(fc, pdu.DEVICE_FAILURE) if 0 < fc < 0x80 else None
        if resp is None:
            return
        if resp[0] & 0x80:  # an exception response: function | 0x80, code
            self.exceptions += 1
            self.last_exception = resp[1]
        if broadcast:
            if self._pending is not None:
                self._apply_pending()
            return
        self._reply = rtu.encode_frame(self.address, resp)
        self._state = _REPLY_DUE
        self._at = _add(now_us, self.reply_delay_us)

    def _resync(self, frame, now_us):
        """A master that sends its next request less than t3.5 after another slave's reply
        (pymodbus does; a USB adapter's latency usually hides it) glues the two into one bad
        frame here. If the last 8 bytes are a good 03/04/06 request for us, serve it: a random
        tail passes the CRC and the address once in ~16 million."""
        n = len(frame)
        if n <= 8 or frame[n - 8] != self.address or frame[n - 7] not in (3, 4, 6):
            return
        tail = frame[n - 8:]
        try:
            rtu.decode_frame(tail)
        except rtu.FrameError:
            return
        self.resynced += 1
        self._handle(tail, now_us)

    def _serve(self, body, request, now_us, broadcast):
        """The response PDU to `request` (pdu.parse_request of the request PDU `body`), or None
        for a broadcast read."""
        fc, address, count, values = request
        if values is None:
            if broadcast:
                return None  # a read has no meaning without an answer
            code = register_map.check_read(fc, address, count)
            if code:
                return pdu.encode_exception(fc, code)
            # the response PDU, registers written in place (no list, no per-register objects)
            n = 2 * count
            resp = bytearray(2 + n)
            resp[0] = fc
            resp[1] = n
            register_map.read_into(memoryview(resp)[2:], fc, address, count, self._values(now_us))
            return resp
        code = register_map.check_write(address, values)
        if code == 0:
            code = self._write(address, values, now_us, broadcast)
        if code:
            return pdu.encode_exception(fc, code)
        # 06 echoes its request; 16 answers with its first five bytes (function, address, count)
        return bytes(body[:5])

    def _values(self, now_us):
        v = dict(self.source.measurements())
        imp = v.get("energy_import_wh", 0)
        exp = v.get("energy_export_wh", 0)
        if "energy_import_kwh" not in v:
            v["energy_import_kwh"] = imp / 1000
        if "energy_export_kwh" not in v:
            v["energy_export_kwh"] = exp / 1000
        if "energy_total_kwh" not in v:
            v["energy_total_kwh"] = (imp + exp) / 1000
        v["map_version"] = register_map.MAP_VERSION
        v["model"] = register_map.MODEL_AMI_METER
        v["serial"] = self.serial
        v["firmware_major"], v["firmware_minor"], v["firmware_patch"] = self.firmware
        pend = self._pending
        if pend is None:
            pend = (self.address, self.baud_code, self.parity)
        v["modbus_address"], v["baud_rate"], v["parity"] = pend
        v["relay_arm"] = 1 if self._arm.armed(now_us) else 0
        closed = self.source.relay_closed()
        v["relay"] = register_map.RELAY_CLOSED if closed else register_map.RELAY_OPEN
        return v

    def _write(self, address, values, now_us, broadcast):
        """Apply a write that check_write accepted; returns an exception code or 0."""
        end = address + len(values)
        if address <= register_map.RELAY_ADDRESS < end:
            if not self._arm.take(now_us):
                return pdu.ILLEGAL_VALUE  # unarmed or too late: nothing of the request applies
        cfg = list(self._pending or (self.address, self.baud_code, self.parity))
        changed = False
        for i in range(len(values)):
            a = address + i
            v = values[i]
            if a == register_map.RELAY_ARM_ADDRESS:
                self._arm.arm(now_us)
            elif a == register_map.RELAY_ADDRESS:
                self.source.set_relay(v == register_map.RELAY_CLOSED)
            else:
                k = a - 0x3000
                if k == 0 and broadcast:
                    self.ignored += 1  # every meter would take the same address
                    continue
                if cfg[k] != v:
                    cfg[k] = v
                    changed = True
        if changed:
            if self.store is not None:
                for i in range(3):
                    self.store.save(_STORE_KEYS[i], cfg[i])
            self._pending = tuple(cfg)
        return 0

    def _apply_pending(self):
        address, baud, parity = self._pending
        self._pending = None
        self.address = address
        if baud != self.baud_code or parity != self.parity:
            self.baud_code = baud
            self.parity = parity
            self._apply_line()
