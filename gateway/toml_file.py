"""Reading one of the gateway's TOML files (config, device registry) with one-line errors.

Both files are refused whole with an error that names the file; a read, encoding or syntax
problem is reported the same way, through the caller's error class. TOML's own messages carry
line and column, never a value, so no AppKey can leak through them.
"""

from __future__ import annotations

import os
import tomllib
from typing import Callable


def read_toml(path: str | os.PathLike[str], error: Callable[[str, list[str]], Exception]):
    """(path as str, parsed dict); raises ``error(path, [reason])`` when unreadable."""
    p = os.fspath(path)
    try:
        with open(p, "rb") as fp:
            raw = fp.read()
    except OSError as exc:
        raise error(p, [f"cannot read file: {exc.strerror or exc}"]) from exc
    try:
        return p, tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise error(p, [f"not UTF-8 text (byte offset {exc.start})"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise error(p, [f"TOML syntax error: {exc}"]) from exc
