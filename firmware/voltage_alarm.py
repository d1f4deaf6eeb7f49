"""The supply voltage alarm with hysteresis, for poles and meters alike.

low_mv..high_mv is the allowed band (EN 50160: 230 V +-10 %, 207..253 V). An alarm is raised
as soon as a reading leaves the band and cleared only HYST_MV inside it again, so a supply
hovering at a limit does not send an alarm frame every sample.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_HYST_MV = const(4000)


def voltage_alarm(prev, min_mv, max_mv, low_mv, high_mv, low_bit, high_bit):
    """low_bit, high_bit or 0, given the lowest and highest reading now (one phase: the same
    value twice) and prev, the result of the previous call."""
    if min_mv < low_mv or (prev == low_bit and min_mv < low_mv + _HYST_MV):
        return low_bit
    if max_mv > high_mv or (prev == high_bit and max_mv > high_mv - _HYST_MV):
        return high_bit
    return 0
