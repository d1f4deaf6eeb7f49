"""A board's wiring: the contract's pin and bus defaults, overridden by what the firmware config
names, so the simulator attaches its chip models exactly where the firmware will look."""


def wiring(defaults, cfg):
    """{name: pin or bus id} of `defaults`, each taken from cfg when cfg has it."""
    w = dict(defaults)
    for k in w:
        if k in cfg:
            w[k] = cfg[k]
    return w
