"""CRC-16/MODBUS against published vectors, a bitwise reference, pymodbus, and the MicroPython VM."""

import binascii

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.framer.rtu import FramerRTU

import sim.mpvm
from protocol.modbus.crc import crc16

H = binascii.unhexlify


def bitwise_crc(data):
    """The spec's shift-and-xor algorithm, written independently of the table code."""
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            lsb = crc & 1
            crc >>= 1
            if lsb:
                crc ^= 0xA001
    return crc


def pymodbus_crc(data):
    # pymodbus returns the CRC as the big-endian number of its wire bytes (low byte first)
    c = FramerRTU.compute_CRC(data)
    return ((c & 0xFF) << 8) | (c >> 8)


@pytest.mark.parametrize(
    "msg, wire",
    [
        ("01030000000a", "c5cd"),  # serial-line spec example: read 10 holding registers of slave 1
        ("0103006b0003", "7417"),  # application-protocol spec's read-holding example on slave 1
        (binascii.hexlify(b"123456789").decode(), "374b"),  # CRC catalogue check value 0x4B37
    ],
)
def test_known_vectors(msg, wire):
    c = crc16(H(msg))
    assert bytes((c & 0xFF, c >> 8)) == H(wire)


def test_empty_is_init():
    assert crc16(b"") == 0xFFFF


@given(st.binary(max_size=300))
def test_matches_bitwise_reference_and_pymodbus(data):
    assert crc16(data) == bitwise_crc(data) == pymodbus_crc(data)


@given(st.binary(max_size=100), st.binary(max_size=100))
def test_incremental_and_bytes_like(a, b):
    whole = crc16(a + b)
    assert crc16(b, crc16(a)) == whole
    assert crc16(bytearray(a + b)) == whole
    assert crc16(memoryview(a + b)) == whole


@given(st.binary(min_size=1, max_size=254))
def test_frame_with_its_crc_has_zero_residue(data):
    c = crc16(data)
    assert crc16(data + bytes((c & 0xFF, c >> 8))) == 0


@pytest.mark.skipif(not sim.mpvm.available(), reason="node or the MicroPython npm package missing")
def test_crc_on_micropython_matches_cpython():
    import random

    rng = random.Random(0x8005)
    cases = [b"", H("01030000000a"), b"123456789"] + [
        bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 256))) for _ in range(20)
    ]
    script = "import binascii\nfrom protocol.modbus.crc import crc16\n"
    for c in cases:
        script += "print(crc16(binascii.unhexlify('%s')))\n" % binascii.hexlify(c).decode()
    # continuation from a given crc and bytearray input
    script += "print(crc16(bytearray(b'456789'), crc16(b'123')))\n"
    out = [int(x) for x in sim.mpvm.run(script).split()]
    assert out == [bitwise_crc(c) for c in cases] + [bitwise_crc(b"123456789")]


def test_every_table_entry_matches_the_polynomial():
    # the tables are literals in crc.py: each of their 512 entries is reached by one of these
    # (a first byte b indexes entry 0xFF ^ b, a second byte after 0x00 reaches every entry too)
    for b in range(256):
        assert crc16(bytes([b])) == bitwise_crc(bytes([b]))
        assert crc16(bytes([0x00, b])) == bitwise_crc(bytes([0x00, b]))
