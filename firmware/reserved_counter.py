"""A counter that never repeats or goes backwards across resets and power cuts, with few flash writes.

LoRaWAN's FCnt and DevNonce must never repeat, or the network server drops the device as a
replay; writing every increment to flash would wear it out. So the live value is kept in RAM
and flash holds a reservation ahead of it: before the live value reaches the reservation, a new
one `step` further is written and committed. After a cold boot the counter resumes at the stored
reservation, skipping at most `step` values, and costs one flash write per `step` values.

The store is any object with `load(key) -> int or None` and `save(key, value)`, where `save`
returns only once the value is durable (see nvs_store.NvsStore).
"""


class ReservedCounter:
    def __init__(self, store, key, step=256, limit=0xFFFFFFFF):
        if step < 1:
            raise ValueError("step must be at least 1, got %d" % step)
        self._store = store
        self._key = key
        self._step = step
        self._limit = limit
        stored = store.load(key)
        # Every value below the stored reservation may have been used before the cut.
        self._next = 0 if stored is None else stored
        self._reserved = self._next

    def peek(self):
        """The value the next call to take() returns."""
        return self._next

    def take(self):
        """Return a value never returned before, reserving more in flash when needed."""
        value = self._next
        if value > self._limit:
            raise OverflowError("counter %s exhausted at %d" % (self._key, self._limit))
        if value >= self._reserved:
            reserved = value + self._step
            if reserved > self._limit + 1:
                reserved = self._limit + 1
            self._store.save(self._key, reserved)  # durable before the value is used
            self._reserved = reserved
        self._next = value + 1
        return value

    def advance_to(self, value):
        """Never hand out anything below `value` (e.g. a counter the network reported)."""
        if value > self._next:
            self._next = value
