"""Register/command-level models of the chips on the emulated boards, driven by "true" physical
values the simulator sets, and the boards around them (pole_board, pole_peripherals,
meter_board). Attach an I2C chip with `sim.fakes.machine.bus(0).attach(addr, model)`.

Bus protocol of an I2C model (see sim/fakes/machine.py): `i2c_write(data, stop) -> bool`
(False = NACK) and `i2c_read(n) -> bytes or None` (None = NACK).
"""
