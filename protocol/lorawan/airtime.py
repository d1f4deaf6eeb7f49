"""Time on air of LoRa and FSK frames, in integer microseconds.

LoRa follows Semtech AN1200.13 (SX127x). Integers only, so a device with single-precision
floats and the gateway agree to the microsecond on duty-cycle budgets and RX windows:

    Tsym = 2^SF / BW
    nPay = 8 + max(ceil((8*PL - 4*SF + 28 + 16*CRC - 20*IH) / (4*(SF - 2*DE))) * (CR + 4), 0)
    ToA  = (Npreamble + 4.25 + nPay) * Tsym = (4*Npreamble + 17 + 4*nPay) * 2^SF / (4*BW)

The last form is computed exactly and rounded up; for 125/250/500 kHz it is always a whole
number of microseconds, so nothing is rounded at all.
"""


def _check(name, value, lo, hi):
    if type(value) is not int or not lo <= value <= hi:
        raise ValueError("%s must be an int in %d..%d, got %r" % (name, lo, hi, value))


def low_dr_optimize_needed(sf, bw_hz):
    """True when Tsym >= 16 ms (SF11/SF12 at 125 kHz, SF12 at 250 kHz), as LoRaMac-node does."""
    return (1 << sf) * 1000 >= 16 * bw_hz


def symbol_time_ns(sf, bw_hz):
    """Symbol duration 2^SF / BW in nanoseconds (rounded up; exact for 125/250/500 kHz)."""
    _check("sf", sf, 6, 12)
    _check("bw_hz", bw_hz, 1, 10000000)
    return -(-(1000000000 << sf) // bw_hz)


def payload_symbols(payload_len, sf, bw_hz, cr=1, crc=True, explicit_header=True,
                    low_dr_optimize=None):
    """nPay: symbols after the preamble (header, payload and CRC), AN1200.13."""
    _check("payload_len", payload_len, 0, 255)
    _check("sf", sf, 6, 12)
    _check("bw_hz", bw_hz, 1, 10000000)
    _check("cr", cr, 1, 4)
    if low_dr_optimize is None:
        de = 1 if low_dr_optimize_needed(sf, bw_hz) else 0
    else:
        de = 1 if low_dr_optimize else 0
    num = 8 * payload_len - 4 * sf + 28 + (16 if crc else 0) - (0 if explicit_header else 20)
    blocks = -(-num // (4 * (sf - 2 * de)))  # exact integer ceiling, also for num < 0
    return 8 + max(blocks * (cr + 4), 0)


def time_on_air_us(payload_len, sf, bw_hz, cr=1, preamble=8, crc=True, explicit_header=True,
                   low_dr_optimize=None):
    """Time on air of one LoRa frame in microseconds, rounded up.

    payload_len is the PHYPayload length. crc=True for uplinks; LoRaWAN downlinks have no
    payload CRC (crc=False). cr is 1..4 for 4/5..4/8. low_dr_optimize None = automatic.
    """
    _check("preamble", preamble, 0, 65535)
    n_pay = payload_symbols(payload_len, sf, bw_hz, cr, crc, explicit_header, low_dr_optimize)
    quarters = 4 * preamble + 17 + 4 * n_pay  # whole frame in quarter symbols
    per = 250000 << sf  # one quarter symbol is per / bw_hz microseconds
    q, r = divmod(per, bw_hz)
    if r == 0:
        return quarters * q  # stays a small int on the device
    return -(-(quarters * per) // bw_hz)


def fsk_time_on_air_us(payload_len, bitrate=50000, preamble=5, sync=3, crc=True):
    """Time on air of a LoRaWAN FSK frame (EU868 DR7), microseconds rounded up.

    Bytes on air: preamble (5) + sync word (3) + length (1) + PHYPayload + CRC (2).
    """
    _check("payload_len", payload_len, 0, 255)
    _check("bitrate", bitrate, 1, 10000000)
    _check("preamble", preamble, 0, 65535)
    _check("sync", sync, 0, 8)
    nbytes = preamble + sync + 1 + payload_len + (2 if crc else 0)
    return -(-(nbytes * 8000000) // bitrate)


def off_time_us(airtime_us, divisor):
    """Silence owed on a sub-band after a frame under a 1/divisor duty cycle: ToA * (divisor - 1).

    divisor 100 is 1 %, 1000 is 0.1 %, 1 means no limit (returns 0).
    """
    if type(airtime_us) is not int or airtime_us < 0:
        raise ValueError("airtime_us must be a non-negative int, got %r" % (airtime_us,))
    if type(divisor) is not int or divisor < 1:
        raise ValueError("duty-cycle divisor must be an int >= 1, got %r" % (divisor,))
    return airtime_us * (divisor - 1)
