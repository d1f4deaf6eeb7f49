"""The chips and pins around a pole's ESP32, wired onto a given `machine` module: VEML7700,
SHT3x and LIS3DH on I2C, the BL0942 on a UART, the door switch on an input pin, and the lamp
outputs (dimmer PWM, relay) the firmware drives.

Why one module: the simulator runs the same board on CPython (sim.board.LocalBoard) and on the
MicroPython VM (sim/mpvm/board.py); both build their hardware from this class, so the chip
addresses, the wiring defaults, the physical inputs (apply_env keys) and what a power cut does
to the chips cannot drift apart. It runs on MicroPython as well as CPython (no CPython-only
modules); sim/devices/ is mounted into the VM.

The board's time, lifecycle and radio stay with the boards; this class only needs the board's
`clock()` (virtual ms, for the sensors' conversion times).
"""

from sim.devices import lis3dh, sht3x, veml7700
from sim.devices.bl0942 import BL0942

# pin / bus defaults of the contract, used when cfg does not name them
WIRING = {"i2c_id": 0, "uart_id": 2, "dimmer_pin": 25, "relay_pin": 26, "door_pin": 27}

# rows of: apply_env key, chip attribute of PolePeripherals, the chip's attribute (floats
# each); one flat tuple, as a dict of pairs would hold 400 B of the VM's heap
ENV = ("lux", "veml", "lux",
       "temperature_c", "sht", "temperature",
       "humidity_rh", "sht", "humidity",
       "tilt_deg", "lis", "tilt_deg",
       "azimuth_deg", "lis", "azimuth_deg",
       "power_w", "meter", "power",
       "current_a", "meter", "current",
       "voltage_v", "meter", "voltage",
       "line_hz", "meter", "line_hz")
ENV_KEYS = tuple(ENV[i] for i in range(0, len(ENV), 3)) + ("door_open",)


class PolePeripherals:
    """One board's chip models and pins on `machine` (the board's own fake module), wired at
    the pins and bus ids of `cfg` (WIRING for those it does not name)."""

    def __init__(self, machine, cfg, clock):
        self.machine = machine
        self.clock = clock
        self.wiring = w = dict((k, cfg.get(k, v)) for k, v in WIRING.items())
        self.veml = veml7700.VEML7700(lux=0.0, clock=clock)
        self.sht = sht3x.SHT3x(clock=clock)
        self.lis = lis3dh.LIS3DH()
        self.meter = BL0942()
        bus = machine.bus(w["i2c_id"])
        bus.attach(veml7700.ADDRESS, self.veml)
        bus.attach(sht3x.ADDRESS, self.sht)
        bus.attach(lis3dh.ADDRESS, self.lis)
        if hasattr(machine, "uart"):
            machine.uart(w["uart_id"]).attach(self.meter)
        self.meter_ms = 0  # virtual ms up to which the meter has counted energy
        self.door_open = False

    def advance_meter(self, now_ms):
        """The BL0942 counts the energy of the present power up to now_ms."""
        if now_ms > self.meter_ms:
            self.meter.advance((now_ms - self.meter_ms) / 1000.0)
            self.meter_ms = now_ms

    def apply_env(self, env):
        """Set the physical truth of the ENV_KEYS present in env (others are ignored); the
        caller has advanced the meter to the instant first."""
        for i in range(0, len(ENV), 3):
            if ENV[i] in env:
                setattr(getattr(self, ENV[i + 1]), ENV[i + 2], float(env[ENV[i]]))
        if "door_open" in env:
            self.door_open = bool(env["door_open"])
            self.drive_inputs()

    def env(self):
        """The physical truth now, as apply_env keys."""
        out = {"door_open": self.door_open}
        for i in range(0, len(ENV), 3):
            out[ENV[i]] = getattr(getattr(self, ENV[i + 1]), ENV[i + 2])
        return out

    def drive_inputs(self):
        """What the board drives into the ESP32 (again after a reset released its pins): the
        door switch, which opens when the door opens on a pulled-up pin, so 1 = open."""
        self.machine.drive(self.wiring["door_pin"], 1 if self.door_open else 0)

    def outputs(self):
        """What the firmware drives, for the world to turn into lamp power."""
        return {"dimmer_duty_u16": self.machine.pwm_duty(self.wiring["dimmer_pin"]),
                "relay": self.machine.level(self.wiring["relay_pin"])}

    def power_cut(self):
        """Mains lost and back: the chips reset to their power-up state (the BL0942 loses its
        energy counter); the physical truth they measure stays."""
        self.meter.power_cycle()
        self.veml.__init__(lux=self.veml.lux, clock=self.clock)
        self.sht.__init__(self.sht.temperature, self.sht.humidity, clock=self.clock)
        self.lis.__init__(self.lis.tilt_deg, self.lis.azimuth_deg)
