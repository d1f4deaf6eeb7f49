"""Provisioning one device: identity, /config.json on the board, the gateway's registry entry and
the label, in an order that never leaves the two sides disagreeing silently.

Order, and why: everything is checked on the host first (the config with the firmware's rules,
the registry with the gateway's loader, so a duplicate DevEUI is refused before the board is
touched); then the config goes to the board and is read back by hash; only then is the registry
file replaced (atomically); the label comes last. A failure at any step names the step, and the
steps before it are either harmless to repeat (the config write) or not yet done (the registry).
"""

import secrets

from fieldkit import device_config, label, registry_file
from fieldkit.board_link import BoardLink

CONFIG_PATH = "/config.json"
NO_JOIN_SERVER = "0000000000000000"  # LoRaWAN 1.0.4's JoinEUI for "no join server"


def new_app_key():
    """A fresh AppKey from the OS's CSPRNG: one per device, never reused."""
    return secrets.token_hex(16).upper()


def _hex(name, value, n):
    v = value.replace(":", "").replace("-", "").replace(" ", "").upper()
    if len(v) != 2 * n or any(c not in "0123456789ABCDEF" for c in v):
        raise device_config.DeviceConfigError("%s: want %d hex digits, got %r" % (name, 2 * n, value))
    return v


class Provisioned:
    """What one provisioning produced (and the batch log keeps): no AppKey in repr."""

    def __init__(self, dev_eui, name, site, kind, qr_text, label_path, registered):
        self.dev_eui = dev_eui
        self.name = name
        self.site = site
        self.kind = kind
        self.qr_text = qr_text
        self.label_path = label_path
        self.registered = registered

    def __repr__(self):
        return "Provisioned(%s %s %r at %r)" % (self.kind, self.dev_eui, self.name, self.site)


def provision(port, kind, dev_eui, registry, join_eui=NO_JOIN_SERVER, app_key=None, board=None,
              site="unassigned", name=None, settings=(), label_path=None, out=print,
              baud=115200, resume=False):
    """Provision the device on `port` (see the module docstring). Raises DeviceConfigError,
    registry_file.RegistryError or board_link.BoardError, each with one line that names what to
    fix; `out` gets the label and the progress lines.

    resume: a device the registry already lists (a batch that stopped after the registry step)
    keeps its registered JoinEUI and AppKey, and only its config is written again."""
    dev_eui = _hex("--dev-eui", dev_eui, 8)
    join_eui = _hex("--join-eui", join_eui, 8)
    app_key = _hex("--app-key", app_key, 16) if app_key else None
    name = name or "%s-%s" % (kind, dev_eui[-6:].lower())
    known = registry_file.find(registry, dev_eui) if resume else None
    if known is not None:
        if known.kind != kind or (app_key and bytes.fromhex(app_key) != known.app_key):
            raise device_config.DeviceConfigError(
                "%s is already registered as a %s with another AppKey or kind: remove it from %s "
                "first to provision it anew" % (dev_eui, known.kind, registry))
        join_eui, app_key = known.join_eui.hex().upper(), known.app_key.hex().upper()
    app_key = app_key or new_app_key()
    cfg = device_config.build(kind, dev_eui, join_eui, app_key, board, settings)
    lorawan = cfg.get("interfaces", "both") != "modbus"
    new_registry = None
    if lorawan and known is None:
        new_registry = registry_file.prepare(registry, registry_file.entry_text(
            name, site, kind, dev_eui, join_eui, app_key))
    with BoardLink(port, baud) as link:
        link.write_file(CONFIG_PATH, device_config.to_json(cfg))
    out("%s: wrote %s (%s, %d settings)" % (port, CONFIG_PATH, kind, len(cfg)))
    if new_registry is not None:
        registry_file.commit(registry, new_registry)
        out("%s: added %s (%s)" % (registry, dev_eui, name))
    qr_text, qr = label.make(join_eui, dev_eui, kind)
    out(label.terminal_text(qr, dev_eui, name))
    if label_path:
        label.save(qr, label_path, dev_eui, name)
        out("label: %s" % label_path)
    return Provisioned(dev_eui, name, site, kind, qr_text, label_path, new_registry is not None)
