"""UNIX milliseconds -> the tuple machine.RTC().datetime() takes, and the day of the year,
integer-only.

The network's time (DeviceTimeAns) arrives as a UTC instant; the ESP32's RTC is set with a
civil date. MicroPython's time.gmtime() uses the port's epoch (2000 on older ESP32 builds,
1970 on newer ones) and floats would lose milliseconds, so the conversion is done here
(H. Hinnant's days-to-civil algorithm, proleptic Gregorian calendar).
"""


def datetime_tuple(unix_ms):
    """(year, month, day, weekday 0=Monday, hours, minutes, seconds, microseconds) in UTC."""
    secs = unix_ms // 1000
    ms = unix_ms - secs * 1000
    days = secs // 86400
    rem = secs - days * 86400
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    y = yoe + era * 400 + (1 if m <= 2 else 0)
    return (y, m, d, (days + 3) % 7, rem // 3600, rem // 60 % 60, rem % 60, ms * 1000)


def day_of_year(year, month, day):
    days = (0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334)[month - 1] + day
    if month > 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0):
        days += 1
    return days
