"""The LoRa radio interface the MAC (firmware/lorawan/device.py) drives.

Two chip drivers implement it: firmware/drivers/sx127x.py (SX1276/77/78/79 over SPI
registers) and firmware/drivers/sx126x.py (SX1261/62 over the command interface).
firmware/radio_board.py picks and wires one from the config's `board`. In the simulator the
same drivers drive register-level chip models (sim/devices/sx1276.py, sx1262.py), whose link
to the radio medium is sim.sim_radio.SimRadio; unit tests of the MAC use scripted radios.

The interface, which each driver (and the MAC's scripted test radios) implements; no base
class, which would cost a class and its methods on the device's heap for documentation only.
Every call is non-blocking and acts "now"
(at the now_ms of the current poll):

    rssi(freq_hz) -> int dBm
        channel power now, for KR920 listen-before-talk (the driver senses for at least the
        region's lbt_sense_time_us before answering, or its RSSI is an average over that).
    transmit(freq_hz, sf, bw_hz, power_dbm, data) -> None
        uplink starts now: explicit header, CRC on, IQ normal, coding rate 4/5, preamble 8,
        LoRaWAN public sync word.
    receive(freq_hz, sf, bw_hz, timeout_ms) -> None
        one RX window opens now, IQ inverted, no CRC; if no preamble starts within timeout_ms
        the window closes.
    poll() -> None | ("tx_done",) | ("rx", phy_bytes, rssi_dbm, snr_db) | ("rx_timeout",)
        the next event, each returned exactly once.
    standby() -> None
        abort any RX/TX.

The MAC computes every instant itself (time on air from protocol.lorawan.airtime, the RX
windows from the end of the transmission), so the radio needs no clock of its own.
"""

TX_DONE = "tx_done"
RX = "rx"
RX_TIMEOUT = "rx_timeout"


class RadioError(OSError):
    """The transceiver does not answer as its datasheet says (wrong version register, BUSY
    stuck high, a command that never completes): the message names the wiring to check."""
