"""Test helpers that run on CPython and on the MicroPython VM (mounted there as /lib/vmlib)."""
