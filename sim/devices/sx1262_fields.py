"""The SX1262 model's settings by name, read out of its `state` bytes: what tests on the host
ask a model (`model.sf`, `model.invert_iq`, `model.mode`, ...; SX1262.__getattr__ comes here).

Why apart: on the VM the model keeps its settings as bytes, and every name here would be one
more interned string in a board's RAM. Host side only (CPython): it reads the model's layout
constants, which MicroPython compiles away.
"""

from sim.devices import sx1262 as _chip

# name: (offset in state, size in bytes, signed)
_FIELDS = {
    "packet_type": (_chip._PACKET_TYPE, 1, False),
    "frf": (_chip._FRF, 4, False),
    "sf": (_chip._MOD, 1, False),
    "bw_code": (_chip._MOD + 1, 1, False),
    "cr": (_chip._MOD + 2, 1, False),
    "ldro": (_chip._MOD + 3, 1, False),
    "preamble": (_chip._PKT, 2, False),
    "implicit": (_chip._PKT + 2, 1, False),
    "payload_len": (_chip._PKT + 3, 1, False),
    "crc": (_chip._PKT + 4, 1, False),
    "invert_iq": (_chip._PKT + 5, 1, False),
    "tcxo_delay": (_chip._TCXO + 1, 3, False),
    "regulator": (_chip._REGULATOR, 1, False),
    "stop_on_preamble": (_chip._STOP_ON_PREAMBLE, 1, False),
    "power": (_chip._TX_PARAMS, 1, True),
    "ramp": (_chip._TX_PARAMS + 1, 1, False),
    "irq_mask": (_chip._DIO_IRQ, 2, False),
    "dio1_mask": (_chip._DIO_IRQ + 2, 2, False),
    "dio2_mask": (_chip._DIO_IRQ + 4, 2, False),
    "dio3_mask": (_chip._DIO_IRQ + 6, 2, False),
    "tx_base": (_chip._BASES, 1, False),
    "rx_base": (_chip._BASES + 1, 1, False),
    "mode": (_chip._MODE, 1, False),
    "irq": (_chip._IRQ, 2, False),
    "errors": (_chip._ERRORS, 2, False),
    "cmd_status": (_chip._CMD_STATUS, 1, False),
    "rx_len": (_chip._RX_BUFFER, 1, False),
    "rx_start": (_chip._RX_BUFFER + 1, 1, False),
    "pkt_rssi": (_chip._PKT_STATUS, 1, False),
    "pkt_snr": (_chip._PKT_STATUS + 1, 1, False),
    "pkt_signal": (_chip._PKT_STATUS + 2, 1, False),
}


def field(model, name):
    """model's setting `name`; AttributeError for a name the chip does not have."""
    s = model.state
    if name in _FIELDS:
        at, size, signed = _FIELDS[name]
        return int.from_bytes(bytes(s[at:at + size]), "big", signed=signed)
    if name == "tcxo_code":  # None until SetDio3AsTcxoCtrl
        return s[_chip._TCXO] if s[_chip._SET] & 1 else None
    if name == "image":  # None until CalibrateImage
        return s[_chip._IMAGE] << 8 | s[_chip._IMAGE + 1] if s[_chip._SET] & 2 else None
    if name == "rf_switch":
        return bool(s[_chip._RF_SWITCH])
    if name == "pa_config":
        return tuple(s[_chip._PA:_chip._PA + 4])
    raise AttributeError("%s has no attribute %r" % (type(model).__name__, name))
