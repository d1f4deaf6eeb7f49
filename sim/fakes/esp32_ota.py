"""ESP32 OTA for emulated boards: two app partitions, the boot selection and the bootloader's
rollback, as `esp32.Partition` and ESP-IDF's app rollback give them.

MicroPython's API (the parts firmware and an updater use): `Partition(Partition.RUNNING)` /
`Partition(Partition.BOOT)`, `.info()` (its label is [4]), `.get_next_update()` (the other OTA
slot), `.set_boot()`, and `Partition.mark_app_valid_cancel_rollback()`.

The bootloader's rule, at every reset: after set_boot() to the other slot, the next boot runs
that image in "pending verify" state; if it resets again before calling
mark_app_valid_cancel_rollback(), the bootloader marks it aborted and boots the previous
image. The images themselves are not emulated (the firmware is the same code in both slots):
what this models is which slot runs and when a rollback happens.

Not part of the esp32 fake itself: a test that updates firmware attaches it to one board
(`attach(machine, esp32)`), so that no other board's VM heap pays for these names.
"""


class OtaState:
    """The otadata sector: survives resets and power cuts."""

    def __init__(self):
        self.running = "ota_0"
        self.boot = "ota_0"
        self.pending = False  # the running image has not been marked valid since it was new
        self.rollbacks = 0
        self.boots = []  # (label, pending) of every boot

    def bootloader(self):
        """The bootloader's choice at a reset (see the module docstring)."""
        if self.pending:  # the new image did not confirm itself: back to the previous one
            self.rollbacks += 1
            self.boot = self.running = _other(self.running)
            self.pending = False
        elif self.boot != self.running:
            self.running = self.boot
            self.pending = True
        self.boots.append((self.running, self.pending))


def _other(label):
    return "ota_1" if label == "ota_0" else "ota_0"


def partition_class(state):
    class Partition:
        BOOT = 0
        RUNNING = 1

        def __init__(self, id):
            if id == Partition.RUNNING:
                self.label = state.running
            elif id == Partition.BOOT:
                self.label = state.boot
            else:
                self.label = id

        def info(self):
            return (0, 0x10 if self.label == "ota_0" else 0x11, 0, 0x1D0000, self.label, False)

        def get_next_update(self):
            return Partition(_other(state.running))

        def set_boot(self):
            state.boot = self.label

        @staticmethod
        def mark_app_valid_cancel_rollback():
            state.pending = False

    return Partition


def attach(machine, esp32):
    """Give this board's esp32 fake a Partition with OTA state, and run the bootloader's step
    at each of its resets (machine.soft_reset / power_cut: every way the simulator resets)."""
    state = OtaState()
    esp32.Partition = partition_class(state)
    soft_reset, power_cut = machine.soft_reset, machine.power_cut

    def reset_then_boot(*a, **k):
        soft_reset(*a, **k)
        state.bootloader()

    def cut_then_boot():
        power_cut()
        state.bootloader()

    machine.soft_reset, machine.power_cut = reset_then_boot, cut_then_boot
    return state
