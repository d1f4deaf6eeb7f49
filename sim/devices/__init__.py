"""Register/command-level models of the chips on a pole's I2C buses, driven by "true" physical
values the simulator sets. Attach one with `sim.fakes.machine.bus(0).attach(addr, model)`.

Bus protocol of a model (see sim/fakes/machine.py): `i2c_write(data, stop) -> bool` (False =
NACK) and `i2c_read(n) -> bytes or None` (None = NACK).
"""


def crc8_sensirion(data):
    """CRC-8 of Sensirion sensors: polynomial 0x31, init 0xFF, no reflection, no final XOR."""
    crc = 0xFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc
