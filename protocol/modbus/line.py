"""The meter's RS-485 line settings as its configuration registers code them: the baud rates
(register value = baud / 100), Eastron's parity codes and the defaults of an SDM630.

Apart from the register map (protocol.modbus.registers, which uses them) so that a device can
check its provisioned line without loading the map: a LoRaWAN-only meter never needs it.
"""

BAUD_RATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
PARITY_CODES = ((0, "N", 1), (1, "E", 1), (2, "O", 1), (3, "N", 2))  # (code, parity, stop bits)
DEFAULTS = {"modbus_address": 1, "baud_rate": 96, "parity": 0}  # an SDM630's 9600 8N1, address 1
