"""The LoRa radio interface the MAC (firmware/lorawan/device.py) drives.

This module only documents the interface; it contains no chip driver. A real board needs an
SX127x or SX126x driver that implements it (SPI register access, DIO interrupts, TCXO and
RF-switch control) - that driver is out of scope here and nothing in this repository claims
to be one. The simulator's sim.sim_radio.SimRadio implements the same interface against its
radio medium, and the tests use scripted radios.

A half-duplex transceiver as an SX127x/SX126x driver exposes it. Every call is non-blocking
and acts "now" (at the now_ms of the current poll):

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


class Radio:
    """Interface only: subclasses (a chip driver, sim.sim_radio.SimRadio) implement every method."""

    def rssi(self, freq_hz):
        raise NotImplementedError

    def transmit(self, freq_hz, sf, bw_hz, power_dbm, data):
        raise NotImplementedError

    def receive(self, freq_hz, sf, bw_hz, timeout_ms):
        raise NotImplementedError

    def poll(self):
        raise NotImplementedError

    def standby(self):
        raise NotImplementedError
