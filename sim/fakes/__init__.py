"""Stand-ins for MicroPython's C modules, for running firmware code under CPython.

Each fake follows the real module's observable behaviour (argument rules, error types and
messages, state quirks), as read from MicroPython's C sources, so that code which works against
a fake does not fail on the board. Install one with `sys.modules["cryptolib"] = sim.fakes.cryptolib`.
"""
