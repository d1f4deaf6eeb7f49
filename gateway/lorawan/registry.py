"""Device registry: which LoRaWAN devices may join this gateway, loaded from a TOML file.

File format (stdlib ``tomllib``)::

    [[device]]
    name     = "pole-0017"
    site     = "harbour-east"
    kind     = "pole"                      # "pole" | "meter"
    dev_eui  = "70B3D57ED0001234"          # 8 bytes, human (label) order
    join_eui = "70B3D57ED0000000"          # 8 bytes
    app_key  = "2B7E151628AED2A6ABF7158809CF4F3C"   # 16 bytes
    dev_nonce = "counter"                  # optional: "counter" (LoRaWAN 1.0.4, default)
                                           # or "random" (1.0.2 devices with random DevNonce)

Hex values may contain ``:``, ``-``, ``_`` or spaces as separators and either case.

Error policy: the whole file is validated and **every** problem is collected; if there is at
least one, :func:`load_registry` raises a single :class:`RegistryError` whose message (and
``errors`` list) names the file, the entry (index and name when known) and the field of each
problem.  One bad entry rejects the whole file: the gateway should refuse to start rather than
run with a silently partial device list.  Unknown fields are errors too (they are typically
typos of optional fields).

AppKeys never appear in ``repr()`` or in error messages.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterator

from gateway.toml_file import read_toml

__all__ = ["Device", "Registry", "RegistryError", "load_registry", "KINDS", "NONCE_MODES"]

KINDS = ("pole", "meter")
NONCE_MODES = ("counter", "random")
_REQUIRED = ("dev_eui", "join_eui", "app_key", "kind", "name", "site")
_OPTIONAL = ("dev_nonce",)
_HEX_LEN = {"dev_eui": 8, "join_eui": 8, "app_key": 16}


class RegistryError(ValueError):
    """The registry file is unusable; ``errors`` lists every problem found (one per line)."""

    def __init__(self, path: str, errors: list[str]) -> None:
        self.path = path
        self.errors = list(errors)
        n = len(self.errors)
        super().__init__(
            f"device registry {path!r}: {n} error{'s' if n != 1 else ''}:\n  "
            + "\n  ".join(self.errors)
        )


@dataclass(frozen=True, slots=True)
class Device:
    """One registered device. EUIs are 8 bytes in human order (as on the label)."""

    dev_eui: bytes
    join_eui: bytes
    app_key: bytes = field(repr=False)
    kind: str
    name: str
    site: str
    dev_nonce_mode: str = "counter"

    def __repr__(self) -> str:  # explicit so the key can never leak through a future field change
        return (f"Device(name={self.name!r}, kind={self.kind!r}, site={self.site!r}, "
                f"dev_eui={self.dev_eui.hex().upper()}, join_eui={self.join_eui.hex().upper()}, "
                f"dev_nonce_mode={self.dev_nonce_mode!r})")


class Registry:
    """Immutable set of devices, looked up by DevEUI (8 bytes, human order, or a hex str)."""

    def __init__(self, devices: list[Device], path: str = "<memory>") -> None:
        self.path = path
        self._by_eui: dict[bytes, Device] = {}
        for d in devices:
            if d.dev_eui in self._by_eui:
                raise ValueError(f"duplicate DevEUI {d.dev_eui.hex().upper()}")
            self._by_eui[d.dev_eui] = d

    @staticmethod
    def _key(dev_eui: bytes | str) -> bytes:
        if isinstance(dev_eui, str):
            return bytes.fromhex(_strip_hex(dev_eui))
        return bytes(dev_eui)

    def get(self, dev_eui: bytes | str) -> Device | None:
        """The device with this DevEUI, or None."""
        try:
            return self._by_eui.get(self._key(dev_eui))
        except ValueError:
            return None

    def __getitem__(self, dev_eui: bytes | str) -> Device:
        d = self.get(dev_eui)
        if d is None:
            raise KeyError(dev_eui)
        return d

    def __contains__(self, dev_eui: object) -> bool:
        return isinstance(dev_eui, (bytes, bytearray, str)) and self.get(dev_eui) is not None

    def __len__(self) -> int:
        return len(self._by_eui)

    def __iter__(self) -> Iterator[Device]:
        return iter(self._by_eui.values())

    def __repr__(self) -> str:
        return f"<Registry {self.path!r} {len(self)} devices>"


def _strip_hex(s: str) -> str:
    for sep in ":-_ ":
        s = s.replace(sep, "")
    return s


def _parse_hex(value: object, field_name: str, where: str, errors: list[str],
               secret: bool = False) -> bytes | None:
    want = _HEX_LEN[field_name]
    if not isinstance(value, str):
        errors.append(f"{where}: field {field_name!r} must be a hex string, got {type(value).__name__}")
        return None
    s = _strip_hex(value)
    shown = "" if secret else f" {value!r}"
    if not s or any(c not in "0123456789abcdefABCDEF" for c in s) or len(s) % 2:
        errors.append(f"{where}: field {field_name!r} is not valid hex{shown}")
        return None
    b = bytes.fromhex(s)
    if len(b) != want:
        errors.append(f"{where}: field {field_name!r} must be {want} bytes ({2 * want} hex digits), "
                      f"got {len(b)} bytes{shown}")
        return None
    return b


def parse_registry(data: object, path: str = "<memory>") -> Registry:
    """Validate an already-parsed TOML document (a dict) -> Registry, or raise RegistryError."""
    errors: list[str] = []
    if not isinstance(data, dict):
        raise RegistryError(path, ["top level is not a table"])
    for key in data:
        if key != "device":
            errors.append(f"unknown top-level key {key!r} (expected [[device]] entries)")
    entries = data.get("device", [])
    if not isinstance(entries, list):
        errors.append("'device' must be an array of tables ([[device]])")
        entries = []
    devices: list[Device] = []
    seen: dict[bytes, str] = {}
    for i, entry in enumerate(entries):
        where = f"entry #{i}"
        if not isinstance(entry, dict):
            errors.append(f"{where}: not a table")
            continue
        name = entry.get("name")
        if isinstance(name, str) and name:
            where = f"entry #{i} ({name!r})"
        ok = True
        for f in _REQUIRED:
            if f not in entry:
                errors.append(f"{where}: missing field {f!r}")
                ok = False
        for f in entry:
            if f not in _REQUIRED and f not in _OPTIONAL:
                errors.append(f"{where}: unknown field {f!r}")
                ok = False
        vals: dict[str, object] = {}
        for f in ("dev_eui", "join_eui", "app_key"):
            if f in entry:
                b = _parse_hex(entry[f], f, where, errors, secret=(f == "app_key"))
                ok = ok and b is not None
                vals[f] = b
        for f in ("name", "site"):
            if f in entry:
                v = entry[f]
                if not isinstance(v, str) or not v.strip():
                    errors.append(f"{where}: field {f!r} must be a non-empty string")
                    ok = False
                vals[f] = v
        if "kind" in entry:
            k = entry["kind"]
            if k not in KINDS:
                errors.append(f"{where}: field 'kind' is unknown kind {k!r} (expected one of {', '.join(KINDS)})")
                ok = False
            vals["kind"] = k
        mode = entry.get("dev_nonce", "counter")
        if mode not in NONCE_MODES:
            errors.append(f"{where}: field 'dev_nonce' is {mode!r} (expected one of {', '.join(NONCE_MODES)})")
            ok = False
        eui = vals.get("dev_eui")
        if isinstance(eui, bytes):
            if eui in seen:
                errors.append(f"{where}: field 'dev_eui' duplicate DevEUI {eui.hex().upper()} "
                              f"(already used by {seen[eui]})")
                ok = False
            else:
                seen[eui] = where
        if ok:
            devices.append(Device(vals["dev_eui"], vals["join_eui"], vals["app_key"],  # type: ignore[arg-type]
                                  vals["kind"], vals["name"], vals["site"], mode))  # type: ignore[arg-type]
    if errors:
        raise RegistryError(path, errors)
    return Registry(devices, path)


def load_registry(path: str | os.PathLike[str]) -> Registry:
    """Read and validate the registry file; raise RegistryError listing all problems."""
    p, data = read_toml(path, RegistryError)
    return parse_registry(data, p)
