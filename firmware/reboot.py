"""Reboot: a reboot command's delayed machine.reset().

The reset waits for the command's delay, then for the MAC to have sent what is queued (the
command's ack, so the network does not resend it), but no more than 60 s: a MAC that cannot
transmit (duty cycle, no network) must not keep a board from the reboot it was told to do.
"""

_MAX_WAIT_MS = 60000


class Reboot:
    def __init__(self):
        self.at = None  # monotonic ms, None = no reboot asked

    def request(self, mono, delay_s):
        self.at = mono + delay_s * 1000

    def due(self, mono, mac):
        """True when the reset must happen now (the caller resets; it does not return)."""
        at = self.at
        if at is None or mono < at:
            return False
        if mac is None or (not mac.busy() and not mac.queued()) or mono >= at + _MAX_WAIT_MS:
            self.at = None
            return True
        return False

    def wake(self, mono):
        """When to poll again for it (100 ms steps while waiting for the MAC), or None."""
        if self.at is None:
            return None
        return self.at if self.at > mono else mono + 100
