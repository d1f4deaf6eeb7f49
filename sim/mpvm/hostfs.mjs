// Host directories as the VM's flash file system: the node half of sim/mpvm/port/hostvfs.py.
//
// The VM's own file system is Emscripten's MEMFS (lost with the process) and reports
// Emscripten's errno values (ENOENT = 44), which neither MicroPython code nor mpremote
// understands. These calls work on a host directory instead, synchronously, so a file the
// firmware (or mpremote) wrote is on the host at once and survives soft reboots, machine.reset()
// and power cycles, as it does in flash. Every failure is returned as minus MicroPython's errno
// (the littlefs numbers an ESP32 reports: ENOENT 2, EEXIST 17, ENOTDIR 20, EISDIR 21,
// ENOTEMPTY 39...), never thrown, so the Python side raises OSError(errno) itself.
// A root with a size is full as a partition of that size is: each file takes whole 4 KiB
// blocks (littlefs's metadata and inlined small files are not modelled), a write that would
// need more raises ENOSPC.
//
// Data moves through the VM's linear memory: the Python side passes the address of a buffer
// (uctypes.addressof), so no bytes are converted between the two languages.
import fs from "node:fs";
import path from "node:path";

// py/mperrno.h and littlefs's lfs_error (which reuses the POSIX numbers)
const MP_ERRNO = {
  EPERM: 1, ENOENT: 2, EIO: 5, EBADF: 9, EAGAIN: 11, ENOMEM: 12, EACCES: 13, EBUSY: 16,
  EEXIST: 17, EXDEV: 18, ENODEV: 19, ENOTDIR: 20, EISDIR: 21, EINVAL: 22, ENFILE: 23,
  EMFILE: 24, EFBIG: 27, ENOSPC: 28, EROFS: 30, ENAMETOOLONG: 36, ENOTEMPTY: 39,
};
const BLOCK = 4096;
const blocksOf = (bytes) => Math.ceil(bytes / BLOCK);
const S_IFDIR = 0x4000;
const S_IFREG = 0x8000;
const FLAGS = { r: "r", "r+": "r+", w: "w", "w+": "w+", a: "a", "a+": "a+", x: "wx", "x+": "wx+" };

function errno(err) {
  return -(MP_ERRNO[err && err.code] || MP_ERRNO.EIO);
}

// Call fn, turning a node error into -errno.
function guard(fn) {
  try {
    return fn();
  } catch (err) {
    return errno(err);
  }
}

function usedBlocks(dir) {
  let n = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    n += e.isDirectory() ? usedBlocks(p) : blocksOf(fs.statSync(p).size);
  }
  return n;
}

// roots: [hostDir, readonly, sizeBytes or 0 (unlimited)] per VFS id. heap() returns the VM's
// current HEAPU8 (it is replaced when the wasm memory grows). `calls` is the module the VM
// imports as `hostfs`.
export function hostfs(roots, heap) {
  const fds = new Map(); // node fd the VM holds open -> its root

  // A VM path (absolute in the mount, or relative to its cwd: hostvfs.py joins them) to the
  // host path; normalizing an absolute path cannot climb above the root.
  const host = (id, p) => path.join(roots[id][0], path.posix.normalize("/" + p));
  const readonly = (id) => roots[id][1];
  const EROFS = -MP_ERRNO.EROFS;

  // the chip resets: files it had open are abandoned (what was written stays written)
  const closeAll = () => {
    for (const fd of fds.keys()) guard(() => fs.closeSync(fd));
    fds.clear();
  };

  const calls = {
    open(id, p, mode) {
      const flags = FLAGS[mode];
      if (flags === undefined) return -MP_ERRNO.EINVAL;
      if (flags !== "r" && readonly(id)) return EROFS;
      return guard(() => {
        const hp = host(id, p);
        if (fs.existsSync(hp) && fs.statSync(hp).isDirectory()) return -MP_ERRNO.EISDIR;
        const fd = fs.openSync(hp, flags);
        fds.set(fd, id);
        return fd;
      });
    },
    read(fd, addr, n, pos) {
      return guard(() => fs.readSync(fd, heap().subarray(addr, addr + n), 0, n, pos));
    },
    write(fd, addr, n, pos) {
      // pos < 0: append mode, the kernel puts the data at the end
      const at = pos < 0 ? null : pos;
      return guard(() => {
        const [dir, , size] = roots[fds.get(fd)] || [];
        if (size) {
          const now = fs.fstatSync(fd).size;
          const grow = blocksOf(at === null ? now + n : Math.max(now, at + n)) - blocksOf(now);
          if (grow > 0 && usedBlocks(dir) + grow > size / BLOCK) return -MP_ERRNO.ENOSPC;
        }
        return fs.writeSync(fd, heap().subarray(addr, addr + n), 0, n, at);
      });
    },
    size(fd) {
      return guard(() => fs.fstatSync(fd).size);
    },
    truncate(fd, n) {
      return guard(() => (fs.ftruncateSync(fd, n), 0));
    },
    close(fd) {
      if (!fds.delete(fd)) return -MP_ERRNO.EBADF;
      return guard(() => (fs.closeSync(fd), 0));
    },
    // "mode size mtime", or -errno
    stat(id, p) {
      return guard(() => {
        const st = fs.statSync(host(id, p));
        const mode = st.isDirectory() ? S_IFDIR : S_IFREG;
        return `${mode} ${st.isDirectory() ? 0 : st.size} ${Math.floor(st.mtimeMs / 1000)}`;
      });
    },
    // "name\0mode\0size\0" per entry, or -errno
    listdir(id, p) {
      return guard(() => {
        const dir = host(id, p);
        let out = "";
        for (const name of fs.readdirSync(dir).sort()) {
          const st = fs.statSync(path.join(dir, name));
          const isDir = st.isDirectory();
          out += `${name}\0${isDir ? S_IFDIR : S_IFREG}\0${isDir ? 0 : st.size}\0`;
        }
        return out;
      });
    },
    mkdir(id, p) {
      if (readonly(id)) return EROFS;
      return guard(() => (fs.mkdirSync(host(id, p)), 0));
    },
    // littlefs has one remove for files and empty directories (os.remove and os.rmdir both use it)
    remove(id, p) {
      if (readonly(id)) return EROFS;
      return guard(() => {
        const hp = host(id, p);
        if (path.posix.normalize("/" + p) === "/") return -MP_ERRNO.EPERM;
        if (fs.statSync(hp).isDirectory()) fs.rmdirSync(hp);
        else fs.unlinkSync(hp);
        return 0;
      });
    },
    rename(id, a, b) {
      if (readonly(id)) return EROFS;
      return guard(() => (fs.renameSync(host(id, a), host(id, b)), 0));
    },
    // "blockSize blocks freeBlocks" (a root without a size: the host's disk), or -errno
    statvfs(id) {
      return guard(() => {
        const [dir, , size] = roots[id];
        if (size) return `${BLOCK} ${size / BLOCK} ${Math.max(0, size / BLOCK - usedBlocks(dir))}`;
        const st = fs.statfsSync(dir);
        return `${st.bsize} ${st.blocks} ${st.bavail}`;
      });
    },
  };
  return { calls, closeAll };
}
