"""Belling BL0942 single-phase energy metering IC on a UART (4800 baud 8N1, address pins = 0).

Byte-level interface (sim/fakes/machine.py has no UART): the host's bytes go to
`uart_write(data)`; `uart_read(n)` returns up to n bytes the chip has sent (fewer = timeout).

Protocol (BL0942 datasheet V1.06 section 3.3; ESPHome esphome/components/bl0942/bl0942.cpp):
  0x58 0xAA            -> 23-byte full packet: 0x55, I_RMS(3), V_RMS(3), I_FAST_RMS(3),
                          WATT(3, signed), CF_CNT(3), FREQ(3: 16-bit value + a zero byte),
                          STATUS(3), checksum. All little-endian. (ESPHome's DataPacket spells
                          FREQ as uint16 + reserved1 and STATUS as status + 2 reserved bytes.)
  0x58 reg             -> register value (3 bytes LE) + checksum
  0xA8 reg d0 d1 d2 cs -> register write (ignored unless USR_WRPROT 0x1D holds 0x55, or the
                          checksum is wrong); SOFT_RESET 0x1C = 0x5A5A5A resets the chip.
Checksum = ~(0x58 + every byte sent before it) & 0xFF (ESPHome validate_checksum_ and read_reg_;
writes: ~(0xA8 + reg + d0 + d1 + d2)).

Scaling: counts per unit as ESPHome's defaults (bl0942.h): V_RMS = V * 15873.35944299,
I_RMS = I * 251213.46469622 (= 305978 / Vref 1.218 V, 1 mOhm shunt), and the power reference
ESPHome derives from them in setup(): WATT = P * UREF * IREF * 3537 / 305978 / 73989
(= 623.0 counts/W). CF_CNT (datasheet 3.2.5, ESPHome energy_reference = PREF * 3600000 /
419430.4): one count each time the integral of |WATT| dt reaches 1638.4 * 256 = 419430.4
register-seconds (5347.3 counts/kWh); it is 24 bits and wraps. FREQ = 1e6 / line Hz.
STATUS 0 (no reverse power or creep). MODE 0x19 resets to 0x87 (ESPHome BL0942_REG_MODE_DEFAULT).

The simulator sets the true `voltage`, `current`, `power` (W) and `line_hz`, and moves time with
`advance(seconds)` (energy integrated at the current power). `power_cycle()` is a chip reset:
CF_CNT 0, registers back to defaults. Fault injection: `corrupt_checksum`, `truncate` (bytes of
the next full packet to drop, i.e. a short read).
"""

UREF = 15873.35944299
IREF = 251213.46469622
PREF = UREF * IREF * 3537 / 305978 / 73989
CF_WATT_SECONDS = 1638.4 * 256
EREF_PER_KWH = PREF * 3600000 / CF_WATT_SECONDS

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

_MODE_DEFAULT = const(0x87)
_READ = const(0x58)
_WRITE = const(0xA8)
_FULL = const(0xAA)


def _checksum(cmd, data):
    return ~(cmd + sum(data)) & 0xFF


def _clip24(v, signed=False):
    v = int(round(v))
    if signed:
        return min(max(v, -(1 << 23)), (1 << 23) - 1) & 0xFFFFFF
    return min(max(v, 0), 0xFFFFFF)


class BL0942:
    def __init__(self, voltage=230.0, current=0.0, power=0.0, line_hz=50.0):
        self.voltage, self.current, self.power, self.line_hz = voltage, current, power, line_hz
        self.corrupt_checksum = False
        self.truncate = 0
        self.packets = 0
        self._in = b""
        self._out = b""
        self.power_cycle()

    def power_cycle(self):
        self.cf_cnt = 0
        self._energy = 0.0  # register-seconds not yet turned into a CF count
        self.regs = {0x19: _MODE_DEFAULT, 0x1D: 0, 0x1A: 0x000000}
        self._out = b""
        self._in = b""

    def advance(self, seconds):
        self._energy += abs(self.power) * PREF * seconds
        n = int(self._energy // CF_WATT_SECONDS)
        self._energy -= n * CF_WATT_SECONDS
        self.cf_cnt = (self.cf_cnt + n) & 0xFFFFFF

    # -- register contents
    def _measured(self):
        """Registers 0x03..0x09 in order: I_RMS, V_RMS, I_FAST_RMS, WATT, CF_CNT, FREQ, STATUS
        (the full packet's fields)."""
        return (_clip24(self.current * IREF), _clip24(self.voltage * UREF),
                _clip24(self.current * IREF), _clip24(self.power * PREF, True), self.cf_cnt,
                min(int(round(1e6 / self.line_hz)), 0xFFFF) if self.line_hz else 0, 0)

    def packet(self):
        body = bytes([0x55])
        for v in self._measured():
            body += v.to_bytes(3, "little")
        cs = _checksum(_READ, body)
        return body + bytes([cs ^ 0x5A if self.corrupt_checksum else cs])

    # -- UART side
    def uart_write(self, data):
        self._in += bytes(data)
        while len(self._in) >= 2:
            cmd, reg = self._in[0], self._in[1]
            if cmd == _READ:
                self._in = self._in[2:]
                if reg == _FULL:
                    self.packets += 1
                    pkt = self.packet()
                    if self.truncate:
                        pkt, self.truncate = pkt[:-self.truncate], 0
                    self._out += pkt
                else:
                    val = (self._measured()[reg - 0x03] if 0x03 <= reg <= 0x09 else
                           self.regs.get(reg, 0)).to_bytes(3, "little")
                    self._out += val + bytes([_checksum(_READ + reg, val)])
            elif cmd == _WRITE:
                if len(self._in) < 6:
                    return
                frame, self._in = self._in[:6], self._in[6:]
                if _checksum(_WRITE, frame[1:5]) != frame[5]:
                    continue
                val = int.from_bytes(frame[2:5], "little")
                if reg == 0x1D:
                    self.regs[0x1D] = val
                elif self.regs[0x1D] == 0x55:
                    if reg == 0x1C and val == 0x5A5A5A:
                        self.power_cycle()
                    else:
                        self.regs[reg] = val
            else:
                self._in = self._in[1:]  # not a command byte: the chip resynchronises

    def uart_read(self, n):
        out, self._out = self._out[:n], self._out[n:]
        return out
