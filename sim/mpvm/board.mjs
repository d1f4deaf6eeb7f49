// One emulated board on the real MicroPython VM, as a long-lived process driven by sim/vmboard.py.
//
// Usage: node sim/mpvm/board.mjs [--heapsize BYTES] [--romfs IMAGE] [--simrom IMAGE]
//                                [--mount HOSTDIR:VMDIR]...
//
// Loads MicroPython (the official WebAssembly build), copies the mounted trees into its
// in-memory file system and answers the host's JSON lines on stdin/stdout with
// sim.mpvm.board.handle(), one call per request (protocol in sim/mpvm/board.py). A request's
// radio calls go to the host through the `hostlink` module, synchronously (fs.readSync /
// fs.writeSync), so they reach the host in the middle of a poll, as driver calls do on the
// device.
// The firmware's prints never mix with the protocol: they go to stderr, one line each,
// prefixed with "| ". The process exits when the host closes stdin.
//
// --romfs: the firmware image (fieldkit.image), handed to the port's own romfs support: it
// copies the image into C memory outside the GC heap and mounts it at /rom with /rom and
// /rom/lib on sys.path, as a board with a romfs partition does, so bytecode runs in place as
// from flash and costs no heap. --simrom: a second image with the emulated silicon and this
// board (sim/fakes, sim/devices, sim/mpvm/board.py), also outside the heap (C malloc, seen
// through uctypes.bytearray_at) and mounted at /simrom; their objects still count.
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));

function parseArgs(argv) {
  const opts = { heapsize: 2 * 1024 * 1024, mounts: [], romfs: null, simrom: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--heapsize") opts.heapsize = parseInt(argv[++i], 10);
    else if (a === "--romfs") opts.romfs = argv[++i];
    else if (a === "--simrom") opts.simrom = argv[++i];
    else if (a === "--mount") {
      const spec = argv[++i];
      const at = spec.lastIndexOf(":");
      opts.mounts.push([spec.slice(0, at), spec.slice(at + 1)]);
    } else throw new Error("unknown argument " + a);
  }
  return opts;
}

function copyTree(mp, hostDir, vmDir) {
  mp.FS.mkdirTree(vmDir);
  for (const entry of fs.readdirSync(hostDir, { withFileTypes: true })) {
    const host = path.join(hostDir, entry.name);
    const vm = vmDir + "/" + entry.name;
    if (entry.isDirectory()) {
      if (entry.name === "__pycache__" || entry.name === "node_modules") continue;
      copyTree(mp, host, vm);
    } else if (/\.(py|mpy|json)$/.test(entry.name)) {
      mp.FS.writeFile(vm, fs.readFileSync(host));
    }
  }
}

// ---- synchronous line I/O on fds 0 and 1 -------------------------------------------------

const sleeper = new Int32Array(new SharedArrayBuffer(4));
const chunk = Buffer.alloc(1 << 16);
let pending = Buffer.alloc(0);

function readLine() {
  for (;;) {
    const nl = pending.indexOf(10);
    if (nl >= 0) {
      const line = pending.subarray(0, nl).toString("utf8");
      pending = pending.subarray(nl + 1);
      return line;
    }
    let n;
    try {
      n = fs.readSync(0, chunk, 0, chunk.length, null);
    } catch (err) {
      if (err.code === "EAGAIN") {
        Atomics.wait(sleeper, 0, 0, 1);
        continue;
      }
      if (err.code === "EOF") return null;
      throw err;
    }
    if (n === 0) return null;
    pending = Buffer.concat([pending, chunk.subarray(0, n)]);
  }
}

function writeAll(fd, text) {
  let buf = Buffer.from(text, "utf8");
  while (buf.length) {
    try {
      const n = fs.writeSync(fd, buf);
      buf = buf.subarray(n);
    } catch (err) {
      if (err.code !== "EAGAIN") throw err;
      Atomics.wait(sleeper, 0, 0, 1);
    }
  }
}

// ---- the VM ------------------------------------------------------------------------------

const opts = parseArgs(process.argv.slice(2));
const firmwareOut = (line) => writeAll(2, "| " + line + "\n");
const mp = await loadMicroPython({
  heapsize: opts.heapsize,
  linebuffer: true,
  stdout: firmwareOut,
  stderr: firmwareOut,
  romfs: opts.romfs ? new Uint8Array(fs.readFileSync(opts.romfs)) : undefined,
});
for (const [host, vm] of opts.mounts) copyTree(mp, host, vm);
if (opts.simrom) {
  const image = fs.readFileSync(opts.simrom);
  const addr = mp._module._malloc(image.length);
  mp._module.HEAPU8.set(image, addr);
  mp.runPython(`import sys, uctypes, vfs
vfs.mount(vfs.VfsRom(uctypes.bytearray_at(${addr}, ${image.length})), "/simrom")
sys.path.insert(sys.path.index("/lib"), "/simrom")
del sys, uctypes, vfs`);
} else {
  mp.FS.mkdirTree("/lib/sim/mpvm");
  for (const pkg of ["/lib/sim/__init__.py", "/lib/sim/mpvm/__init__.py"]) {
    try {
      mp.FS.stat(pkg);
    } catch {
      mp.FS.writeFile(pkg, "");
    }
  }
  for (const name of ["board.py", "cryptolib.py"]) {
    mp.FS.writeFile("/lib/sim/mpvm/" + name, fs.readFileSync(path.join(HERE, name)));
  }
}
// The ESP32's cryptolib is C (mbedtls, hardware AES); this VM has none. `hostaes` is its
// stand-in in the same place, outside the Python heap: AES-128/256-ECB by node's OpenSSL, for
// sim/mpvm/cryptolib.py. Bytes cross as hex, one str each way: a str is copied across, while a
// bytes object handed to JS becomes a proxy that keeps it on the Python heap until node's
// garbage collector runs a finalizer, which a VM that never yields to the event loop never sees
// (each session key a device ever used stayed on its heap: 0.4 KB per rejoin).
mp.registerJsModule("hostaes", {
  ecb: (keyHex, dataHex, encrypt) => {
    const k = Buffer.from(keyHex, "hex");
    const c = (encrypt ? crypto.createCipheriv : crypto.createDecipheriv)(
      "aes-" + k.length * 8 + "-ecb", k, null);
    c.setAutoPadding(false);
    return Buffer.concat([c.update(Buffer.from(dataHex, "hex")), c.final()]).toString("hex");
  },
});
mp.registerJsModule("hostlink", {
  call: (line) => {
    writeAll(1, line + "\n");
    return readLine();
  },
});
try {
  const handle = mp.pyimport("sim.mpvm.board").handle;
  for (;;) {
    const line = readLine();
    if (line === null) break;
    writeAll(1, handle(line) + "\n");
  }
} catch (err) {
  writeAll(2, String(err && err.message ? err.message : err) + "\n");
  process.exitCode = 1;
}
