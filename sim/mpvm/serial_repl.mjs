// The real MicroPython VM as a board on a serial line: its REPL on stdin/stdout, byte for byte
// as an ESP32's UART REPL, so the real mpremote can drive it (through a pty: sim/serial_board.py).
// The line itself is sim/mpvm/serial_line.mjs, the flash sim/mpvm/hostfs.mjs, the Python the
// chip would have in C sim/mpvm/port/.
//
// Usage: node sim/mpvm/serial_repl.mjs --flash HOSTDIR [--flash-size BYTES] [--heapsize BYTES]
//            [--romfs FILE]... [--romfs-size BYTES] [--mount HOSTDIR:VMDIR]...
//            [--frozen-boot FILE.py] [--unique-id HEX] [--port-rom IMAGE]
//            [--radio-link IN_FD,OUT_FD]
//
// --flash: the board's file system (sim/mpvm/hostfs.mjs, mounted at / by port/_boot.py), as
// full as a partition of --flash-size would be (default 2 MiB: ESP32_GENERIC's vfs).
// --romfs: a host file as the board's romfs partition (--romfs-size, default 128 KiB or the
// largest file's size). Repeated: partitions 0, 1, ... (a partition table with two romfs
// partitions, for A/B app slots). The ROMFS image in partition 0 is mounted at /rom (/rom,
// /rom/lib on sys.path) at boot, as on the chip; a boot.py may mount another one there;
// and `mpremote romfs deploy` rewrites it (port/rom_partition.py). These two files are all that
// outlives the process (a power cycle); the RTC also outlives resets. --mount: a host tree,
// read-only, at VMDIR.
// --frozen-boot: Python run at every boot after the port's _boot.py and before boot.py (where
// a simulation installs its fakes, e.g. sim/fakes/machine.py as `machine`).
// --port-rom: sim/mpvm/port/ as a ROMFS image of .mpy (sim/serial_board.py builds it), run in
// place as the chip runs its C: without it the .py are compiled at boot (~6 KB more heap).
// --radio-link: two inherited pipe fds to the host, for the board's hardware that lives there
// (a field board's LoRa antenna and NVS partition: sim/field_board.py): the `radiolink` module's
// call(line) writes one line on OUT_FD and returns the host's answer line read from IN_FD,
// synchronously, in the middle of the Python that called it.
//
// What the chip does, and how:
// - Power-on (process start) and machine.reset() print the ESP32 ROM's boot lines, then run
//   /boot.py and /main.py, then the friendly REPL (banner, ">>> "). Every boot is a fresh VM:
//   nothing but the flash survives, as on the chip.
// - Ctrl-A raw REPL, Ctrl-B, Ctrl-C, Ctrl-D (execute; on an empty line soft reboot) are the
//   VM's own event-driven REPL (replInit / replProcessChar). A soft reboot prints
//   "MPY: soft reboot", runs boot.py, and main.py only from the friendly REPL (ports/esp32
//   main.c), so mpremote's soft reset in the raw REPL does not start the application.
// - The raw-paste request (\x05A\x01) is answered "R\x00" (unsupported): the VM's raw-paste
//   reads stdin through a stub and would hang; mpremote then sends plain raw REPL.
// - Ctrl-C while Python runs (main.py, an exec) is heard whenever it sleeps (time.sleep*,
//   machine.idle(): port/_boot.py), where the chip would too; a loop that never sleeps cannot
//   be interrupted, only reset (kill the process = power cycle). The VM's asyncio runs on
//   node's event loop (no asyncio.run), so a main.py must return or loop with time.sleep.
// - Bytes that arrive while the board resets are kept for the new boot's REPL (a real chip
//   may lose them), so a tool that reconnects at once does not fail at random.
// - stderr is not the line: it gets "boot: power|hard|soft" per boot, and node's own failures.
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { hostfs } from "./hostfs.mjs";
import { nap, SerialLine } from "./serial_line.mjs";

const PORT = path.join(path.dirname(fileURLToPath(import.meta.url)), "port");
// --settrace: the package's build with sys.settrace, so that Python code on the host's side of
// the board (a watchdog that fires between any two lines) runs while the firmware never yields
const SETTRACE_WASM = path.join(path.dirname(fileURLToPath(
  import.meta.resolve("@micropython/micropython-webassembly-pyscript"))), "micropython-settrace.wasm");
const RAW_BANNER = "raw REPL; CTRL-B to exit\r\n";
const RAW_PASTE_REQUEST = [0x05, 0x41, 0x01];
const CTRL_A = 0x01, CTRL_B = 0x02, CTRL_C = 0x03, CTRL_D = 0x04;
// machine.reset_cause() after each kind of boot, as ports/esp32 maps the ROM's reset reason:
// POWERON_RESET -> PWRON_RESET (1; the EN button is a power-on reset on an ESP32),
// SW_CPU_RESET (machine.reset()) -> SOFT_RESET (5), TG0WDT_SYS_RESET -> WDT_RESET (3); a soft
// reboot (Ctrl-D) leaves the chip's reset reason, so the cause, as it was
const RESET_CAUSE = { power: 1, hard: 5, wdt: 3 };
const ROM_RESET = { power: "0x1 (POWERON_RESET)", hard: "0xc (SW_CPU_RESET)",
  wdt: "0x7 (TG0WDT_SYS_RESET)" };
const ROMFS_HEADER = Buffer.from([0xd2, 0xcd, 0x31]);
const ROMFS_DEFAULT_SIZE = 128 * 1024;

function romBootText(cause) {
  return "ets Jul 29 2019 12:21:46\r\n\r\n" +
    `rst:${ROM_RESET[cause]},boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n` +
    "configsip: 0, SPIWP:0xee\r\nmode:DIO, clock div:2\r\nentry 0x400805cc\r\n";
}

function parseArgs(argv) {
  const opts = { flash: null, heapsize: 2 * 1024 * 1024, romfs: [], romfsSize: 0, mounts: [],
    frozenBoot: null, uniqueId: "246f28000001", portRom: null, flashSize: 2 * 1024 * 1024,
    radioLink: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--flash") opts.flash = path.resolve(argv[++i]);
    else if (a === "--flash-size") opts.flashSize = parseInt(argv[++i], 10);
    else if (a === "--heapsize") opts.heapsize = parseInt(argv[++i], 10);
    else if (a === "--romfs") opts.romfs.push(path.resolve(argv[++i]));
    else if (a === "--romfs-size") opts.romfsSize = parseInt(argv[++i], 10);
    else if (a === "--frozen-boot") opts.frozenBoot = fs.readFileSync(argv[++i], "utf8");
    else if (a === "--unique-id") opts.uniqueId = argv[++i];
    else if (a === "--port-rom") opts.portRom = fs.readFileSync(argv[++i]);
    else if (a === "--radio-link") opts.radioLink = argv[++i].split(",").map(Number);
    else if (a === "--settrace") opts.settrace = true;
    else if (a === "--mount") {
      const spec = argv[++i];
      const at = spec.lastIndexOf(":");
      opts.mounts.push([path.resolve(spec.slice(0, at)), spec.slice(at + 1)]);
    } else throw new Error("unknown argument " + a);
  }
  if (!opts.flash) throw new Error("--flash HOSTDIR is required");
  fs.mkdirSync(opts.flash, { recursive: true });
  if (opts.romfs.length && !opts.romfsSize) {
    const size = Math.max(...opts.romfs.map((f) => (fs.existsSync(f) ? fs.statSync(f).size : 0)));
    opts.romfsSize = Math.max(ROMFS_DEFAULT_SIZE, Math.ceil(size / 4096) * 4096);
  }
  return opts;
}

const opts = parseArgs(process.argv.slice(2));

const line = new SerialLine();
line.interrupt = () => vm._module._mp_sched_keyboard_interrupt();
const send = (bytes) => line.send(bytes);

// ---- the chip ---------------------------------------------------------------------------

let vm = null;
let rawMode = false; // the REPL is raw (followed from what the VM answers)
let rawLen = 0; // bytes of the raw REPL's current command
let held = []; // a possible raw-paste request, not yet given to the VM
let pending = null; // "soft" | "hard": the reset to do once the VM has unwound
let booting = false;
let resetCause = RESET_CAUSE.power;
// The RTC keeps counting over resets and starts at 2000-01-01 at power-on (no backup battery).
let rtcOffsetMs = Date.UTC(2000, 0, 1) - Date.now();

const flashRoots = [[opts.flash, false, opts.flashSize],
  ...opts.mounts.map(([host]) => [host, true, 0])];
const files = hostfs(flashRoots, () => vm._module.HEAPU8);

const chip = {
  reset(kind) {
    pending = kind;
    line.muted = true;
  },
  reset_cause: () => resetCause,
  // seconds since 1970, a float: JS integers reach Python as 32 bits
  rtc_time: () => (Date.now() + rtcOffsetMs) / 1000,
  rtc_set(seconds) {
    rtcOffsetMs = seconds * 1000 - Date.now();
  },
  unique_id: () => opts.uniqueId,
  mounts: () => opts.mounts.map(([, at], i) => `${i + 1}\0${at}\0`).join(""),
  romfs_count: () => opts.romfs.length,
  romfs_size: () => (opts.romfs.length ? opts.romfsSize : 0),
  // the partition into VM memory at addr (erased flash reads 0xff), and back at offset
  romfs_read(i, addr, n) {
    const part = vm._module.HEAPU8.subarray(addr, addr + n);
    part.fill(0xff);
    const file = opts.romfs[i];
    if (fs.existsSync(file)) part.set(fs.readFileSync(file).subarray(0, n));
  },
  romfs_write(i, addr, offset, n) {
    const file = opts.romfs[i];
    const fd = fs.openSync(file, fs.existsSync(file) ? "r+" : "w");
    try {
      fs.writeSync(fd, vm._module.HEAPU8.subarray(addr, addr + n), 0, n, offset);
    } finally {
      fs.closeSync(fd);
    }
  },
  // the next byte from the line, waiting for it; -1 when it was Ctrl-C (a KeyboardInterrupt
  // is then pending)
  read_byte() {
    for (;;) {
      if (line.poll()) return -1;
      const c = line.next();
      if (c >= 0) return c;
      line.flush();
      nap(5);
    }
  },
  // wait ms, polling the line; true when a Ctrl-C cut it short: the caller (port/_boot.py)
  // raises KeyboardInterrupt at once, as the chip's sleep does (a scheduled one would only be
  // raised some bytecodes later, after the next statement: a reset, say, would win)
  sleep_ms(ms) {
    const end = Date.now() + Math.max(0, ms);
    const scheduled = line.interrupt;
    line.interrupt = () => {};
    try {
      for (;;) {
        line.flush();
        if (line.poll()) return true;
        const left = end - Date.now();
        if (left <= 0) return false;
        nap(Math.min(left, 10));
      }
    } finally {
      line.interrupt = scheduled;
    }
  },
};

// ---- the host's side of the board (--radio-link) ------------------------------------------

const sleeper = new Int32Array(new SharedArrayBuffer(4));
const linkChunk = Buffer.alloc(1 << 16);
let linkPending = Buffer.alloc(0);

function linkWrite(text) {
  let buf = Buffer.from(text + "\n", "utf8");
  while (buf.length) {
    try {
      buf = buf.subarray(fs.writeSync(opts.radioLink[1], buf));
    } catch (err) {
      if (err.code !== "EAGAIN") throw err;
      Atomics.wait(sleeper, 0, 0, 1);
    }
  }
}

function linkReadLine() {
  for (;;) {
    const nl = linkPending.indexOf(10);
    if (nl >= 0) {
      const text = linkPending.subarray(0, nl).toString("utf8");
      linkPending = linkPending.subarray(nl + 1);
      return text;
    }
    let n;
    try {
      n = fs.readSync(opts.radioLink[0], linkChunk, 0, linkChunk.length, null);
    } catch (err) {
      if (err.code === "EAGAIN") {
        Atomics.wait(sleeper, 0, 0, 1);
        continue;
      }
      throw err;
    }
    if (n === 0) process.exit(0); // the host went away: the board has lost its power
    linkPending = Buffer.concat([linkPending, linkChunk.subarray(0, n)]);
  }
}

const radioLink = {
  call(text) {
    linkWrite(text);
    return linkReadLine();
  },
};

// Run Python at boot as pyexec_file does: a traceback is printed, SystemExit soft-reboots.
function runBootCode(code) {
  try {
    vm.runPython(code);
  } catch (err) {
    if (err.name !== "PythonError") throw err;
    if (err.type === "SystemExit") {
      if (!pending) pending = "soft";
      return;
    }
    // the file's frames, not the one of the execfile() that ran it
    send(err.message.replace(/^(Traceback[^\n]*\n)  File "<stdin>", line 1, in <module>\n/, "$1"));
  }
}

function runScript(name) {
  if (!pending && fs.existsSync(path.join(opts.flash, name))) {
    runBootCode(`execfile(${JSON.stringify(name)})`);
  }
}

// The port's modules at /port for _boot.py to import: from C memory outside the heap (a ROMFS
// of .mpy, unmounted once imported: the bytecode stays where it is), or as .py in MEMFS.
function loadPort() {
  let mount = "";
  if (opts.portRom) {
    const addr = vm._module._malloc(opts.portRom.length);
    vm._module.HEAPU8.set(opts.portRom, addr);
    const rom = `uctypes.bytearray_at(${addr}, ${opts.portRom.length})`;
    mount = `import uctypes, vfs\nvfs.mount(vfs.VfsRom(${rom}), "/port")\n`;
  } else {
    vm.FS.mkdirTree("/port");
    for (const name of fs.readdirSync(PORT)) {
      if (!name.endsWith(".py")) continue;
      vm.FS.writeFile("/port/" + name, fs.readFileSync(path.join(PORT, name)));
    }
  }
  vm.runPython(`${mount}import sys\nsys.path.insert(0, "/port")\nimport _boot\n` +
    (opts.portRom ? 'vfs.umount("/port")\ndel uctypes, vfs\n' : "") + "del sys");
}

// What the port mounts at /rom: the partition, if it holds a ROMFS image.
function romfsImage() {
  if (!opts.romfs.length || !fs.existsSync(opts.romfs[0])) return undefined;
  const part = fs.readFileSync(opts.romfs[0]);
  return part.subarray(0, 3).equals(ROMFS_HEADER) ? new Uint8Array(part) : undefined;
}

async function boot(cause) {
  booting = true;
  while (cause) {
    line.muted = false;
    files.closeAll();
    if (cause === "soft") send("MPY: soft reboot\r\n");
    else {
      rawMode = false; // the chip restarts in the friendly REPL
      send(romBootText(cause));
    }
    line.flush();
    process.stderr.write(`boot: ${cause}\n`); // for the host (SerialBoard.boots()), not on the line
    if (cause !== "soft") resetCause = RESET_CAUSE[cause];
    vm = await loadMicroPython({ heapsize: opts.heapsize, linebuffer: false, stdout: send,
      stderr: send, romfs: romfsImage(), url: opts.settrace ? SETTRACE_WASM : undefined });
    vm.registerJsModule("hostfs", files.calls);
    vm.registerJsModule("_chip", chip);
    if (opts.radioLink) vm.registerJsModule("radiolink", radioLink);
    loadPort();
    if (opts.frozenBoot) runBootCode(opts.frozenBoot);
    runScript("boot.py");
    if (!rawMode) runScript("main.py");
    if (!pending) {
      // the chip enters its REPL directly: no "\r\n" first as replInit's Ctrl-B prints
      const repl = line.hear(() => vm.replInit());
      if (rawMode) {
        line.hear(() => vm.replProcessChar(CTRL_A));
        send(RAW_BANNER + ">");
        rawLen = 0;
      } else send(repl.replace(/^\r\n/, ""));
    }
    line.flush();
    cause = pending;
    pending = null;
  }
  booting = false;
  pump();
}

// A byte from the line: the raw-paste request is refused here, the rest goes to the VM's REPL.
function feed(c) {
  if (rawMode && rawLen === 0 && (held.length > 0 || c === RAW_PASTE_REQUEST[0])) {
    held.push(c);
    if (c === RAW_PASTE_REQUEST[held.length - 1]) {
      if (held.length === RAW_PASTE_REQUEST.length) {
        held = [];
        send("R\x00");
      }
      return;
    }
    const bytes = held;
    held = [];
    for (const b of bytes) toRepl(b);
    return;
  }
  toRepl(c);
}

function toRepl(c) {
  if (pending) return; // the chip is resetting: it hears nothing
  let ret;
  if (!rawMode && c === CTRL_A) {
    const said = line.hear(() => (ret = vm.replProcessChar(c)));
    rawMode = said.includes(RAW_BANNER); // Ctrl-A on a non-empty line only moves the cursor
    send(said);
  } else {
    ret = vm.replProcessChar(c);
    if (rawMode && c === CTRL_B) rawMode = false;
  }
  if (rawMode) rawLen = c === CTRL_A || c === CTRL_C || c === CTRL_D ? 0 : rawLen + 1;
  // PYEXEC_FORCED_EXIT: Ctrl-D on an empty line, or SystemExit
  if (ret !== 0 && !pending) pending = "soft";
}

function pump() {
  if (booting) return;
  for (let c; !pending && (c = line.next()) >= 0;) feed(c);
  line.flush();
  if (pending) {
    const cause = pending;
    pending = null;
    boot(cause);
  }
}

process.stdin.on("data", (data) => {
  line.receive(data);
  pump();
});
process.stdin.on("end", () => process.exit(0));
process.stdin.on("error", () => process.exit(0));
await boot("power");
