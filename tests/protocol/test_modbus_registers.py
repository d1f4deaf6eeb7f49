"""The meter register map: layout against modbus.md, encodings against pymodbus, read plans,
slave-side checks, the doc table, and the MicroPython VM."""

import math
import os
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.framer.rtu import FramerRTU
from pymodbus.pdu import DecodePDU
from pymodbus.pdu.register_message import ReadInputRegistersRequest

import sim.mpvm
from protocol.modbus import pdu as P
from protocol.modbus import registers as M
from protocol.modbus import rtu as R

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DT = ModbusClientMixin.DATATYPE
NAMES = sorted(M.BY_NAME)
f32s = st.floats(width=32, allow_nan=False)


# ------------------------------------------------------------ layout


def test_layout_is_consistent():
    for table, fc in ((M.INPUT_REGISTERS, 4), (M.HOLDING_REGISTERS, 3)):
        addrs = [r.address for r in table]
        assert addrs == sorted(addrs)
        for a, b in zip(table, table[1:]):
            assert a.address + a.count <= b.address, (a.name, b.name)
        for r in table:
            assert r.function == fc
            assert r.count == {"f32": 2, "u16": 1, "u32": 2, "u64": 4}[r.type]
            assert M._block(fc, r.address, r.count) is not None, r.name
            assert r.writable == (fc == 3)
            assert (r.allowed is not None) == r.writable
    assert len(M.BY_NAME) == len(M.REGISTERS)
    # the descriptions are keyed by the names of protocol.modbus.register_map, none left over
    assert set(M.INPUT_INFO) == {r.name for r in M.INPUT_REGISTERS}
    assert set(M.HOLDING_INFO) == {r.name for r in M.HOLDING_REGISTERS}
    for r in M.INPUT_REGISTERS:
        if r.address < 0x0158:
            assert r.type == "f32" and r.address % 2 == 0
    assert max(r.address + r.count for r in M.INPUT_REGISTERS if r.address < 0x1000) == 0x0158


# modbus.md, "Eastron SDM630 / SDM120 input registers": name, 1-based register, 0-based address
MODBUS_MD_SDM630 = [
    ("voltage_l1", 30001, 0x0000, "V"),
    ("current_l1", 30007, 0x0006, "A"),
    ("power_l1", 30013, 0x000C, "W"),
    ("power", 30053, 0x0034, "W"),
    ("power_factor", 30063, 0x003E, ""),
    ("frequency", 30071, 0x0046, "Hz"),
    ("energy_import_kwh", 30073, 0x0048, "kWh"),
    ("energy_export_kwh", 30075, 0x004A, "kWh"),
    ("energy_total_kwh", 30343, 0x0156, "kWh"),
]


@pytest.mark.parametrize("name, reg1, address, unit", MODBUS_MD_SDM630)
def test_sdm630_addresses_from_modbus_md(name, reg1, address, unit):
    r = M.entry(name)
    assert r.address == address == reg1 - 30001
    assert (r.function, r.type, r.unit) == (4, "f32", unit)


# modbus.md, "OBIS codes"
MODBUS_MD_OBIS = {
    "energy_import_kwh": "1-0:1.8.0",
    "energy_import_wh": "1-0:1.8.0",
    "energy_export_kwh": "1-0:2.8.0",
    "energy_export_wh": "1-0:2.8.0",
    "power": "1-0:16.7.0",
    "voltage_l1": "1-0:32.7.0",
    "voltage_l2": "1-0:52.7.0",
    "voltage_l3": "1-0:72.7.0",
    "current_l1": "1-0:31.7.0",
    "current_l2": "1-0:51.7.0",
    "current_l3": "1-0:71.7.0",
    "frequency": "1-0:14.7.0",
    "power_factor": "1-0:13.7.0",
    "reactive_energy_import_kvarh": "1-0:3.8.0",
    "reactive_energy_export_kvarh": "1-0:4.8.0",
}


def test_obis_codes_from_modbus_md():
    for name, obis in MODBUS_MD_OBIS.items():
        assert M.entry(name).obis == obis


def test_exact_energy_and_senml_names():
    imp, exp = M.entry("energy_import_wh"), M.entry("energy_export_wh")
    assert (imp.function, imp.address, imp.count, imp.type) == (4, 0x1000, 4, "u64")
    assert (exp.function, exp.address, exp.count, exp.type) == (4, 0x1004, 4, "u64")
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-:./_")
    for r in M.REGISTERS:
        if r.senml_name:
            assert set(r.senml_name) <= allowed and r.senml_name[0].isalnum(), r.senml_name
            assert r.senml_unit
    with pytest.raises(M.RegisterError):
        M.entry("no_such_register")


# ------------------------------------------------------------ value encodings


@given(f32s)
def test_float32_round_trip_and_pymodbus(x):
    hi, lo = M.encode_float32(x)
    assert [hi, lo] == ModbusClientMixin.convert_to_registers(x, DT.FLOAT32)
    assert M.decode_float32(hi, lo) == x
    assert ModbusClientMixin.convert_from_registers([hi, lo], DT.FLOAT32) == x


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_float32_decode_any_bits(hi, lo):
    x = M.decode_float32(hi, lo)
    want = struct.unpack(">f", bytes((hi >> 8, hi & 255, lo >> 8, lo & 255)))[0]
    assert (math.isnan(x) and math.isnan(want)) or x == want


def test_float32_specials():
    assert M.encode_float32(230.0) == (0x4366, 0x0000)
    assert M.encode_float32(float("inf")) == (0x7F80, 0)
    assert M.encode_float32(-float("inf")) == (0xFF80, 0)
    assert math.isnan(M.decode_float32(*M.encode_float32(float("nan"))))
    assert M.encode_float32(3.4028235e38) == (0x7F7F, 0xFFFF)  # rounds to FLT_MAX
    for big in (1e39, -1e39, 3.4028235677973366e38):
        with pytest.raises(M.RegisterError):
            M.encode_float32(big)


@given(st.integers(0, 2**64 - 1))
def test_u64_round_trip_and_pymodbus(v):
    regs = M.encode_u64(v)
    assert list(regs) == ModbusClientMixin.convert_to_registers(v, DT.UINT64)
    assert M.decode_u64(regs) == v


def test_u64_rejects():
    for v in (-1, 2**64):
        with pytest.raises(M.RegisterError):
            M.encode_u64(v)
    with pytest.raises(M.RegisterError):
        M.decode_u64([0, 0, 0])


# ------------------------------------------------------------ slave side: check_read / encode_block


@pytest.mark.parametrize(
    "fc, address, count, code",
    [
        (4, 0x0000, 2, 0),
        (4, 0x0000, 80, 0),
        (4, 0x0000, 125, 2),  # odd count splits a float
        (4, 0x0000, 124, 0),
        (4, 0x0001, 2, 2),  # odd start
        (4, 0x0048, 3, 2),
        (4, 0x0100, 0x58, 0),  # up to the end of the float block
        (4, 0x0156, 4, 2),  # past it
        (4, 0x0158, 2, 2),
        (4, 0x1000, 8, 0),
        (4, 0x1000, 4, 0),
        (4, 0x1002, 4, 2),  # splits both u64
        (4, 0x1000, 9, 2),
        (4, 0x2000, 7, 0),
        (4, 0x2003, 1, 2),  # half the serial number
        (4, 0x2004, 3, 0),
        (3, 0x3000, 5, 0),
        (3, 0x3004, 1, 0),
        (3, 0x3000, 6, 2),
        (4, 0x3000, 1, 2),  # config is holding-only
        (3, 0x0000, 2, 2),  # no holding mirror of the float block
        (3, 0x1000, 4, 2),  # nor of the exact energy
        (4, 0x0000, 126, 3),
        (1, 0x0000, 1, 1),
    ],
)
def test_check_read(fc, address, count, code):
    assert M.check_read(fc, address, count) == code


@given(st.dictionaries(st.sampled_from([r.name for r in M.INPUT_REGISTERS if r.type == "f32"]), f32s), st.data())
def test_float_block_round_trip(values, data):
    start = 2 * data.draw(st.integers(0, 0x157 // 2))
    count = 2 * data.draw(st.integers(1, min(62, (0x158 - start) // 2)))
    regs = M.encode_block(4, start, count, values)
    assert len(regs) == count
    got = M.decode_block(start, regs)
    for r in M.INPUT_REGISTERS:
        if start <= r.address and r.address + 2 <= start + count:
            assert got[r.name] == values.get(r.name, 0.0)
    assert set(got) <= set(M.BY_NAME)
    mapped = set()
    for r in M.INPUT_REGISTERS:
        mapped.update(range(r.address, r.address + r.count))
    for i, w in enumerate(regs):
        if start + i not in mapped:
            assert w == 0  # unlisted addresses read as 0.0


def test_encode_block_refuses_unservable_reads():
    with pytest.raises(M.RegisterError):
        M.encode_block(4, 1, 2, {})


def test_sdm630_tool_reads_our_slave_through_pymodbus():
    """pymodbus (as an SDM630 poller would use it) talks to our slave-side stack end to end."""
    values = {"voltage_l1": 231.5, "current_l1": 1.25, "power_l1": -287.5, "frequency": 49.98,
              "energy_import_kwh": 12345.5, "energy_import_wh": 12345678, "serial": 20240001}
    client = FramerRTU(DecodePDU(is_server=False))
    for fc, start, count in ((4, 0x0000, 80), (4, 0x1000, 8), (4, 0x2000, 7)):
        msg = ReadInputRegistersRequest(address=start, count=count)
        msg.dev_id = 5
        # slave: frame -> request -> check -> registers -> response frame
        address, pdu = R.decode_frame(client.buildFrame(msg))
        req = P.decode_request(pdu)
        assert M.check_read(req.function, req.address, req.count) == 0
        regs = M.encode_block(req.function, req.address, req.count, values)
        adu = R.encode_frame(address, P.encode_response(P.ReadResponse(req.function, regs)))
        # master: pymodbus decodes and converts
        _, resp = client.handleFrame(adu, 5, 0)
        got = resp.registers
        if start == 0:
            for name in ("voltage_l1", "current_l1", "power_l1", "energy_import_kwh"):
                off = M.entry(name).address
                assert ModbusClientMixin.convert_from_registers(got[off : off + 2], DT.FLOAT32) == values[name]
            off = M.entry("frequency").address
            assert ModbusClientMixin.convert_from_registers(got[off : off + 2], DT.FLOAT32) == pytest.approx(49.98)
        elif start == 0x1000:
            assert ModbusClientMixin.convert_from_registers(got[0:4], DT.UINT64) == 12345678
        else:
            assert ModbusClientMixin.convert_from_registers(got[2:4], DT.UINT32) == 20240001


# ------------------------------------------------------------ writes and the relay


@pytest.mark.parametrize(
    "address, values, code",
    [
        (0x3000, [1], 0),
        (0x3000, [247], 0),
        (0x3000, [0], 3),
        (0x3000, [248], 3),
        (0x3001, [96], 0),
        (0x3001, [1152], 0),
        (0x3001, [9600], 3),
        (0x3002, [3], 0),
        (0x3002, [4], 3),
        (0x3000, [17, 192, 1], 0),
        (0x3000, [17, 192, 9], 3),
        (0x3003, [0xA55A], 0),
        (0x3003, [1], 3),
        (0x3004, [0], 0),
        (0x3004, [1], 0),
        (0x3004, [2], 3),
        (0x3003, [0xA55A, 1], 3),  # arm and switch in one request
        (0x3002, [0, 0xA55A, 1], 3),
        (0x3004, [1, 0], 2),  # past the block
        (0x2FFF, [1, 1], 2),
        (0x0014, [1], 2),  # Eastron's node-address register is not ours
        (0x2000, [1], 2),
        (0x3000, [], 3),
    ],
)
def test_check_write(address, values, code):
    assert M.check_write(address, values) == code


def test_relay_arming():
    arm = M.RelayArm()
    window = M.RELAY_ARM_WINDOW_S * 1_000_000
    assert not arm.take(0)  # never armed
    arm.arm(1_000)
    assert arm.armed(1_000 + window - 1)
    assert arm.take(1_000 + window - 1)
    assert not arm.take(1_000 + window - 1)  # used up
    arm.arm(5_000)
    assert not arm.take(5_000 + window)  # too late
    arm.arm(5_000)
    assert not arm.take(4_999)  # clock went backwards: not armed


def test_relay_arming_across_a_tick_wrap():
    period = 1 << 30
    arm = M.RelayArm(ticks_period=period)
    arm.arm(period - 1000)
    assert arm.take(5_000_000)  # 5.001 s later, after the counter wrapped
    plain = M.RelayArm()
    plain.arm(period - 1000)
    assert not plain.take(5_000_000)


# ------------------------------------------------------------ master side: read_plan


def min_reads(regs, max_regs, max_gap):
    """Independent optimum: DP over each block's sorted registers."""
    groups = {}
    for r in regs:
        groups.setdefault((r.function, M._block(r.function, r.address, r.count)), []).append(r)
    total = 0
    for g in groups.values():
        g.sort(key=lambda r: r.address)
        best = [0] + [10**9] * len(g)
        for j in range(1, len(g) + 1):
            for i in range(j):
                seg = g[i:j]
                span = seg[-1].address + seg[-1].count - seg[0].address
                gaps_ok = all(b.address - (a.address + a.count) <= max_gap for a, b in zip(seg, seg[1:]))
                if span <= max_regs and gaps_ok:
                    best[j] = min(best[j], best[i] + 1)
        total += best[-1]
    return total


@given(
    st.lists(st.sampled_from(NAMES), min_size=1, max_size=30),
    st.integers(4, 125),
    st.integers(0, 64),
)
def test_read_plan(wanted, max_regs, max_gap):
    plan = M.read_plan(wanted, max_regs, max_gap)
    for fc, address, count in plan:
        assert 1 <= count <= max_regs
        assert M.check_read(fc, address, count) == 0  # our slave serves every planned read
    for name in wanted:
        r = M.entry(name)
        assert any(fc == r.function and a <= r.address and r.address + r.count <= a + n for fc, a, n in plan)
    assert len(plan) == min_reads({M.entry(n) for n in wanted}, max_regs, max_gap)
    # decoding the planned reads yields every wanted value
    values = {n: (1.5 if M.entry(n).type == "f32" else 7) for n in wanted}
    got = {}
    for fc, a, n in plan:
        got.update(M.decode_block(a, M.encode_block(fc, a, n, values), fc))
    assert {n: got[n] for n in wanted} == values


def test_read_plan_merges_neighbours():
    first_ten = [r.name for r in M.INPUT_REGISTERS[:10]]
    assert M.read_plan(first_ten) == [(4, 0x0000, 0x14)]
    assert M.read_plan(first_ten, max_regs=18) == [(4, 0x0000, 18), (4, 18, 2)]
    assert M.read_plan(first_ten, max_regs=19) == [(4, 0x0000, 18), (4, 18, 2)]  # never splits a float
    assert M.read_plan(["voltage_l1", "energy_total_kwh"], max_gap=1000) == [(4, 0, 2), (4, 0x0156, 2)]
    everything = M.read_plan(NAMES, max_regs=125, max_gap=1000)
    assert everything == [
        (3, 0x3000, 5),
        (4, 0x0000, 0x50),
        (4, 0x00C8, 0x1A),
        (4, 0x0156, 2),  # 0x00C8..0x0157 would be 144 registers
        (4, 0x1000, 8),
        (4, 0x2000, 7),
    ]
    assert M.read_plan(NAMES, max_regs=80, max_gap=1000)[1:3] == [(4, 0x0000, 0x50), (4, 0x00C8, 0x1A)]


def test_read_plan_rejects():
    with pytest.raises(M.RegisterError):
        M.read_plan(["nope"])
    with pytest.raises(M.RegisterError):
        M.read_plan(["energy_import_wh"], max_regs=2)


# ------------------------------------------------------------ docs


def test_doc_table_matches_the_code():
    with open(os.path.join(ROOT, "docs", "wire-format.md")) as f:
        doc = f.read()
    start = doc.index("<!-- register-map:begin -->\n") + len("<!-- register-map:begin -->\n")
    end = doc.index("<!-- register-map:end -->")
    assert doc[start:end] == M.markdown_table(), "regenerate with: python -m protocol.modbus.registers"


# ------------------------------------------------------------ MicroPython


@pytest.mark.skipif(not sim.mpvm.available(), reason="node or the MicroPython npm package missing")
def test_registers_on_micropython_match_cpython():
    floats = [0.0, -0.0, 1.0, 230.0, 49.98, -287.5, 1e-40, 3.4e38, 12345.678]
    ints = [0, 1, 2**32 + 5, 2**63, 2**64 - 1, 123456789012]
    values = {"voltage_l1": 231.5, "power": -1234.5, "frequency": 50.0, "energy_import_wh": 98765432123,
              "serial": 20240001, "firmware_minor": 3}
    reads = [(4, 0, 80), (4, 0x1000, 8), (4, 0x2000, 7), (4, 1, 2), (3, 0x3000, 5), (4, 0x1002, 2)]
    writes = [(0x3000, [17]), (0x3000, [0]), (0x3003, [0xA55A, 1]), (0x3004, [1])]
    wanted = ["frequency", "power", "voltage_l1", "energy_import_wh", "serial", "relay", "energy_total_kwh"]
    script = "from protocol.modbus import registers as M\n"
    script += "for x in %r:\n    print(M.encode_float32(x))\n" % (floats,)
    script += "for v in %r:\n    r = M.encode_u64(v)\n    print(r, M.decode_u64(r) == v)\n" % (ints,)
    script += "vals = %r\n" % (values,)
    script += "for fc, a, n in %r:\n    c = M.check_read(fc, a, n)\n    print(c, c or M.encode_block(fc, a, n, vals))\n" % (
        reads,
    )
    script += "for a, v in %r:\n    print(M.check_write(a, v))\n" % (writes,)
    script += "print(M.read_plan(%r))\n" % (wanted,)
    script += "print(sorted(M.decode_block(0, M.encode_block(4, 0, 80, vals)).items()))\n"
    script += "print(len(M.markdown_table()))\n"
    out = sim.mpvm.run(script).strip().split("\n")

    want = [str(M.encode_float32(x)) for x in floats]
    want += ["%s True" % (M.encode_u64(v),) for v in ints]
    for fc, a, n in reads:
        c = M.check_read(fc, a, n)
        want.append("%s %s" % (c, c or M.encode_block(fc, a, n, values)))
    want += [str(M.check_write(a, v)) for a, v in writes]
    want.append(str(M.read_plan(wanted)))
    want.append(str(sorted(M.decode_block(0, M.encode_block(4, 0, 80, values)).items())))
    want.append(str(len(M.markdown_table())))
    assert out == want
