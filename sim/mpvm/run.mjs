// Run a Python script on the real MicroPython VM (the official WebAssembly build).
//
// Usage: node sim/mpvm/run.mjs [--heapsize BYTES] [--mount HOSTDIR:VMDIR]... SCRIPT.py
//
// Each --mount copies a host directory tree (only .py and .json files) into the VM's
// in-memory filesystem, so `import protocol` works once /lib/protocol is mounted.
// The script's stdout and stderr are passed through; an uncaught Python exception
// exits with status 1 so callers see failures, not silence.
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";
import fs from "node:fs";
import path from "node:path";

function parseArgs(argv) {
  const opts = { heapsize: 8 * 1024 * 1024, mounts: [], script: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--heapsize") opts.heapsize = parseInt(argv[++i], 10);
    else if (a === "--mount") {
      const spec = argv[++i];
      const at = spec.lastIndexOf(":");
      opts.mounts.push([spec.slice(0, at), spec.slice(at + 1)]);
    } else opts.script = a;
  }
  if (!opts.script) throw new Error("no script given");
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

const opts = parseArgs(process.argv.slice(2));
let out = "";
const mp = await loadMicroPython({
  heapsize: opts.heapsize,
  linebuffer: false,
  stdout: (chunk) => process.stdout.write(chunk),
  stderr: (chunk) => process.stderr.write(chunk),
});
for (const [host, vm] of opts.mounts) copyTree(mp, host, vm);
const code = fs.readFileSync(opts.script, "utf8");
try {
  mp.runPython(code);
} catch (err) {
  process.stderr.write(String(err && err.message ? err.message : err) + "\n");
  process.exitCode = 1;
}
