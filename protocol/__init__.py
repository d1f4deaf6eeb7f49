"""streetgrid's sans-I/O protocol core, shared by the firmware (MicroPython) and the gateway (CPython).

Nothing here does I/O: codecs and state machines are fed bytes and return values and bytes, so the
device and the gateway provably produce and understand the same frames. Subpackages:
lorawan (frames, MAC commands, crypto, regions, airtime), payload (application codecs),
modbus (RTU framing, PDUs, the meter register map), and the cbor module (deterministic CBOR).
"""
