"""Adding a device to the gateway's registry file (devices.toml), through the gateway's own
loader.

Why the loader: the file must stay one the gateway accepts, so the new text is validated by
gateway.lorawan.registry.parse_registry() before it replaces the old one; a duplicate DevEUI (or any
other problem the gateway would refuse to start with) is refused here with the gateway's own
message. The entry is appended as text, so the operator's comments and order survive, and the
file is replaced atomically (a crash leaves the old file or the new one, never half of one).
"""

import os
import tomllib

from gateway.lorawan.registry import RegistryError, load_registry, parse_registry


def entry_text(name, site, kind, dev_eui, join_eui, app_key):
    """One [[device]] table in the registry's documented format."""
    return ('\n[[device]]\nname     = "%s"\nsite     = "%s"\nkind     = "%s"\n'
            'dev_eui  = "%s"\njoin_eui = "%s"\napp_key  = "%s"\n'
            % (_toml_str(name), _toml_str(site), kind, dev_eui.upper(), join_eui.upper(),
               app_key.upper()))


def _toml_str(s):
    return s.replace("\\", "\\\\").replace('"', '\\"')


def prepare(path, text):
    """The registry file's new content with `text` appended, validated; raises RegistryError.
    Nothing is written (see commit())."""
    old = ""
    if os.path.exists(path):
        load_registry(path)  # the file as it is must already be valid
        with open(path, encoding="utf-8") as f:
            old = f.read()
    new = old + ("" if not old or old.endswith("\n") else "\n") + text
    parse_registry(tomllib.loads(new), path)
    return new


def commit(path, content):
    """Replace the registry file with content, atomically and durably."""
    tmp = "%s.tmp-%d" % (path, os.getpid())
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def find(path, dev_eui):
    """The registry's gateway.lorawan.registry.Device for dev_eui, or None (also when there is no file
    yet)."""
    if not os.path.exists(path):
        return None
    return load_registry(path).get(dev_eui)


__all__ = ["RegistryError", "entry_text", "prepare", "commit", "find"]
