"""ChirpStack v4 as an uplink source: its MQTT integration events become our records, and
operator commands for its devices go out on its command topic."""
