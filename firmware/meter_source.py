"""The Modbus slave's data source on a real meter: the ATM90E32 driver's readings and the
EnergyRegister's served totals, plus the disconnect relay on a GPIO.

update(now_ms) is the meter application's once-a-second step (the chip's 16-bit read-clear
energy registers must be read well within their 204.8 Wh wrap): it reads V / I / P / PF / Hz,
moves the energy counted since the last step into the register and lets it commit. The slave
then calls measurements(), which only converts the integers already read (no SPI traffic, no
allocation beyond the dict) and serves the register's *committed* Wh, so what Modbus reports is
never more than a power cut restores.
"""

from firmware.ticks import ticks_diff


class MeterSource:
    def __init__(self, chip, register, relay_pin=None):
        self.chip = chip
        self.register = register
        self.relay_pin = relay_pin
        self._last_ms = None
        self._values = {}

    def update(self, now_ms):
        chip = self.chip
        chip.read()
        elapsed = 0 if self._last_ms is None else ticks_diff(now_ms, self._last_ms)
        self._last_ms = now_ms
        imp, exp = chip.read_energy(elapsed)
        self.register.add(imp, exp, now_ms)
        v = self._values
        for i in range(chip.phases):
            n = "%d" % (i + 1)
            v["voltage_l" + n] = chip.mv[i] / 1000
            v["current_l" + n] = chip.ma[i] / 1000
            v["power_l" + n] = chip.mw[i] / 1000
            v["power_factor_l" + n] = chip.pf[i] / 1000
        v["power"] = chip.total_mw / 1000
        v["frequency"] = chip.centi_hz / 100

    def measurements(self):
        v = self._values
        v["energy_import_wh"] = self.register.import_wh()
        v["energy_export_wh"] = self.register.export_wh()
        return v

    def relay_closed(self):
        return self.relay_pin is None or self.relay_pin.value() == 1

    def set_relay(self, closed):
        if self.relay_pin is not None:
            self.relay_pin.value(1 if closed else 0)
