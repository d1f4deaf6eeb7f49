"""Sunrise and sunset from the date and the pole's position (NOAA's low-accuracy equations).

Accurate to a few minutes between the polar circles, which is what a lighting schedule
anchored on sunset/sunrise needs; single-precision floats (ESP32) lose well under a minute.
The zenith of 90.833 deg is "the sun's upper limb on the horizon, with refraction".
"""

import math


def sun_times_utc(day_of_year, latitude, longitude):
    """(sunrise, sunset) in minutes after UTC midnight (0..1439), or None when the sun does
    not rise or does not set that day (polar night or day)."""
    g = 2 * math.pi / 365 * (day_of_year - 1)
    eqtime = 229.18 * (0.000075 + 0.001868 * math.cos(g) - 0.032077 * math.sin(g)
                       - 0.014615 * math.cos(2 * g) - 0.040849 * math.sin(2 * g))
    decl = (0.006918 - 0.399912 * math.cos(g) + 0.070257 * math.sin(g)
            - 0.006758 * math.cos(2 * g) + 0.000907 * math.sin(2 * g)
            - 0.002697 * math.cos(3 * g) + 0.00148 * math.sin(3 * g))
    lat = math.radians(latitude)
    cos_ha = (math.cos(math.radians(90.833)) / (math.cos(lat) * math.cos(decl))
              - math.tan(lat) * math.tan(decl))
    if cos_ha > 1 or cos_ha < -1:
        return None
    ha = math.degrees(math.acos(cos_ha))
    sunrise = 720 - 4 * (longitude + ha) - eqtime
    sunset = 720 - 4 * (longitude - ha) - eqtime
    return int(sunrise + 0.5) % 1440, int(sunset + 0.5) % 1440
