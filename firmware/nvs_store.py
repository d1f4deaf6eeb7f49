"""Durable integers in the ESP32's NVS, for ReservedCounter and friends.

NVS is wear-levelled and survives power cuts, but nothing persists without commit(), so save()
commits before it returns. Values are stored as 8-byte little-endian blobs because NVS's i32
cannot hold a full 32-bit unsigned frame counter.
"""


class NvsStore:
    def __init__(self, nvs):
        self._nvs = nvs
        self._buf = bytearray(8)

    def load(self, key):
        try:
            n = self._nvs.get_blob(key, self._buf)
        except OSError:
            return None  # never written (ESP_ERR_NVS_NOT_FOUND)
        if n != 8:
            return None
        return int.from_bytes(bytes(self._buf), "little")

    def save(self, key, value):
        self._nvs.set_blob(key, value.to_bytes(8, "little"))
        self._nvs.commit()
