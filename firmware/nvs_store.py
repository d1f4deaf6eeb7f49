"""Durable values in the ESP32's NVS: integers for ReservedCounter and friends, JSON settings.

NVS is wear-levelled and survives power cuts, but nothing persists without commit(), so every
save commits before it returns. Integers are stored as 8-byte little-endian blobs because NVS's
i32 cannot hold a full 32-bit unsigned frame counter. `defaults` are what load() gives for a key
never written: values provisioned in the config, which a later save (a Modbus write of the slave
address, say) then overrides for good.
"""


class NvsStore:
    """`nvs`: the namespace it writes (esp32.NVS), for callers that keep blobs of their own."""

    def __init__(self, nvs, defaults=None):
        self.nvs = nvs
        self._buf = bytearray(8)
        self._defaults = defaults

    def load(self, key):
        try:
            n = self.nvs.get_blob(key, self._buf)
        except OSError:
            n = None  # never written (ESP_ERR_NVS_NOT_FOUND)
        if n != 8:
            return None if self._defaults is None else self._defaults.get(key)
        return int.from_bytes(bytes(self._buf), "little")

    def save(self, key, value):
        self.nvs.set_blob(key, value.to_bytes(8, "little"))
        self.nvs.commit()

    def load_json(self, key, size=1024):
        """The JSON value saved under key, or None (never saved, or unreadable)."""
        import json

        buf = bytearray(size)
        try:
            n = self.nvs.get_blob(key, buf)
            return json.loads(bytes(buf[:n]))
        except (OSError, ValueError):
            return None

    def save_json(self, key, value):
        import json

        self.nvs.set_blob(key, json.dumps(value).encode())
        self.nvs.commit()
