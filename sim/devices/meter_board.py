"""The parts around an AMI meter's ESP32, wired onto a given `machine` module: the ATM90E32
metering chip on SPI, the disconnect relay on an output pin, and the household behind it.

Why one module: the same meter board runs in `python -m sim meter` (Modbus, real time), in a
City on sim.board.LocalBoard and on the MicroPython VM (sim/devices/ is mounted there), so the
pins, the chip, what the relay disconnects and what a power cut does cannot drift apart. No
CPython-only modules.

Physical inputs (apply_env keys, the meter's share of the Board protocol's env):
    power_w        net household power in W (< 0 = export, e.g. rooftop PV), split evenly
                   over the meter's phases
    phase_power_w  per-phase powers instead (a list, one per phase; missing phases 0)
    voltage_v      mains voltage on every phase (default VOLTS, slightly unequal phases)
    power_factor   magnitude of the load's power factor (0.95)
    line_hz        mains frequency
The load only flows while the relay is closed. The relay pin drives a latching relay, so it
keeps its position while the pin is not driven (a reset, a power cut): 1 = closed.

Truth for tests: `import_wh` / `export_wh` (floats) integrate the power that really flowed
through the meter while it was metering (the board powered and its chip configured: before
the first boot the meter is not installed yet), per phase direction as the chip counts it;
`env()` is the present truth.
"""

from sim.devices.atm90e32 import ATM90E32

# pins and bus ids of the contract, used when cfg does not name them
WIRING = {"spi_id": 2, "chip_cs_pin": 5, "relay_pin": 26, "rs485_uart_id": 1,
          "rs485_tx": 17, "rs485_rx": 16, "rs485_de_pin": 4}
VOLTS = (231.5, 233.0, 234.5)
ENV_KEYS = ("power_w", "phase_power_w", "voltage_v", "power_factor", "line_hz")


class MeterPeripherals:
    """One meter board's chip model and pins on `machine` (the board's own fake module);
    `clock()` is the board's virtual ms (the chip counts energy up to it)."""

    def __init__(self, machine, cfg, clock):
        self.machine = machine
        self.clock = clock
        self.wiring = w = dict((k, cfg.get(k, v)) for k, v in WIRING.items())
        self.phases = int(cfg.get("phases", 3))
        self.chip = ATM90E32(voltage=VOLTS)
        machine.spi(w["spi_id"]).attach(w["chip_cs_pin"], self.chip)
        self.load_w = [0.0, 0.0, 0.0]  # the household's demand per phase (W, < 0 export)
        self.power_factor = 0.95
        self.relay = 1  # latching: the last position the pin drove
        self.chip_ms = 0  # virtual ms up to which the chip has counted energy
        self.import_wh = 0.0
        self.export_wh = 0.0

    def relay_closed(self):
        level = self.machine.level(self.wiring["relay_pin"])
        if level is not None:
            self.relay = level
        return self.relay == 1

    def advance_meter(self, now_ms):
        """The chip counts the energy of the present load up to now_ms, and the load follows
        the relay from then on."""
        dt = now_ms - self.chip_ms
        if dt > 0:
            s = dt / 1000.0
            self.chip.advance(s)
            for i in range(3 if self.chip.metering() else 0):
                p = self.chip.voltage[i] * self.chip.current[i] * self.chip.pf[i]
                if p >= 0:
                    self.import_wh += p * s / 3600.0
                else:
                    self.export_wh -= p * s / 3600.0
            self.chip_ms = now_ms
        self._drive_chip()

    def _drive_chip(self):
        closed = self.relay_closed()
        chip = self.chip
        for i in range(3):
            p = self.load_w[i] if closed and i < self.phases else 0.0
            pf = self.power_factor if p >= 0 else -self.power_factor
            chip.pf[i] = pf
            chip.current[i] = abs(p) / (chip.voltage[i] * abs(pf))

    def apply_env(self, env):
        """Set the physical truth of the ENV_KEYS present in env; the caller has advanced the
        chip to the instant first."""
        n = self.phases
        if "phase_power_w" in env:
            pw = list(env["phase_power_w"])
            self.load_w = [float(pw[i]) if i < len(pw) and i < n else 0.0 for i in range(3)]
        elif "power_w" in env:
            p = float(env["power_w"]) / n
            self.load_w = [p if i < n else 0.0 for i in range(3)]
        if "voltage_v" in env:
            self.chip.voltage = [float(env["voltage_v"])] * 3
        if "power_factor" in env:
            self.power_factor = abs(float(env["power_factor"])) or 1.0
        if "line_hz" in env:
            self.chip.line_hz = float(env["line_hz"])
        self._drive_chip()

    def env(self):
        """The physical truth now (the household's demand, whether or not the relay is
        closed), as apply_env keys, plus "relay"."""
        return {"phase_power_w": list(self.load_w[:self.phases]),
                "power_w": sum(self.load_w[:self.phases]),
                "voltage_v": list(self.chip.voltage[:self.phases]),
                "power_factor": self.power_factor, "line_hz": self.chip.line_hz,
                "relay": self.relay}

    def truth(self):
        """What really flowed through the meter (Wh floats), the net power flowing now and
        the L1 voltage, for tests to judge what the firmware served or reported. The net power
        is 0 while the relay is open."""
        flowing = sum(self.load_w[:self.phases]) if self.relay_closed() else 0.0
        return {"import_wh": self.import_wh, "export_wh": self.export_wh,
                "power_w": flowing, "voltage_v": self.chip.voltage[0]}

    def drive_inputs(self):
        """Inputs the board drives into the ESP32 after a reset: none on a meter."""

    def outputs(self):
        return {"relay": self.machine.level(self.wiring["relay_pin"])}

    def power_cut(self):
        """Mains lost and back: the chip resets (registers at defaults, its uncounted energy
        lost); the household and the relay's position stay."""
        self.chip.power_cycle()
