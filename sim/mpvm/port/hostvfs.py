"""The serial board's flash file system: a MicroPython VFS over a host directory.

Runs inside the VM of sim/mpvm/serial_repl.mjs (port/_boot.py mounts it at /), on the `hostfs`
calls of sim/mpvm/hostfs.mjs. It stands in for the ESP32's littlefs partition: what is written is on
the host at once, so it survives soft reboots, machine.reset() and power cycles, and failures
raise OSError with MicroPython's errno numbers (mpremote maps "[Errno 2] ENOENT" to "No such
file"; the VM's own VfsPosix reports Emscripten's 44). As on littlefs, remove() and rmdir()
both delete a file or an empty directory.
"""

import io

import hostfs
import uctypes

_S_IFDIR = 0x4000


def _check(ret):
    if isinstance(ret, int) and ret < 0:
        raise OSError(-ret)
    return ret


def _normpath(cwd, path):
    if not path.startswith("/"):
        path = cwd + "/" + path
    parts = []
    for part in path.split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part and part != ".":
            parts.append(part)
    return "/" + "/".join(parts)


def _utf8_missing(buf, n):
    """Bytes still needed to complete the UTF-8 sequence the first n bytes of buf end inside."""
    for back in range(1, min(n, 4) + 1):
        b = buf[n - back]
        if b & 0xC0 != 0x80:  # a lead (or ASCII) byte
            need = 1 if b < 0x80 else 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            return max(0, need - back)
    return 0


class HostFile(io.IOBase):
    """An open file; position kept here, data read and written in place by the host."""

    def __init__(self, fd, mode, pos):
        self._fd = fd
        self._text = "b" not in mode
        self._append = "a" in mode
        self._pos = pos

    def _live(self):
        if self._fd < 0:
            raise ValueError("I/O operation on closed file")
        return self._fd

    def readinto(self, buf):
        n = _check(hostfs.read(self._live(), uctypes.addressof(buf), len(buf), self._pos))
        self._pos += n
        return n

    def _bytes(self, n):
        buf = bytearray(n)
        return buf[:self.readinto(buf)]

    def read(self, n=-1):
        if n is None or n < 0:
            n = max(0, _check(hostfs.size(self._live())) - self._pos)
            data = self._bytes(n)
            return str(data, "utf-8") if self._text else bytes(data)
        if not self._text:
            return bytes(self._bytes(n))
        # text: n characters, read in bytes that never overshoot them (py/stream.c does so)
        data = bytearray()
        chars = 0
        while chars < n:
            chunk = self._bytes(n - chars)
            if not chunk:
                break
            data += chunk
            data += self._bytes(_utf8_missing(data, len(data)))
            chars = sum(1 for b in data if b & 0xC0 != 0x80)
        return str(data, "utf-8")

    def readline(self):
        line = b""
        while True:
            chunk = bytes(self._bytes(64))
            end = chunk.find(b"\n") + 1
            if end:
                self._pos -= len(chunk) - end  # read again from after the newline
                chunk = chunk[:end]
            line += chunk
            if end or not chunk:
                return str(line, "utf-8") if self._text else line

    def readlines(self):
        return list(self)

    def __iter__(self):
        return self

    def __next__(self):
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def write(self, data):
        if isinstance(data, str):
            data = data.encode()
        n = _check(hostfs.write(self._live(), uctypes.addressof(data), len(data),
                                -1 if self._append else self._pos))
        self._pos = _check(hostfs.size(self._fd)) if self._append else self._pos + n
        return n

    def seek(self, offset, whence=0):
        if whence == 1:
            offset += self._pos
        elif whence == 2:
            offset += _check(hostfs.size(self._live()))
        if offset < 0:
            raise OSError(22)
        self._pos = offset
        return offset

    def tell(self):
        self._live()
        return self._pos

    def truncate(self, size=None):
        _check(hostfs.truncate(self._live(), self._pos if size is None else size))

    def flush(self):
        self._live()  # written data is already on the host, as after lfs_file_sync

    def close(self):
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            _check(hostfs.close(fd))

    def ioctl(self, req, arg):  # the C stream protocol (imports, print(file=))
        if req == 4:  # MP_STREAM_CLOSE
            self.close()
        elif req == 11:  # MP_STREAM_GET_BUFFER_SIZE
            return 256
        elif req != 1:  # MP_STREAM_FLUSH
            return -22
        return 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class HostVfs:
    """A host directory (hostfs root `root`) as a mountable file system."""

    def __init__(self, root):
        self._root = root
        self._cwd = "/"

    def _path(self, path):
        return _normpath(self._cwd, path)

    def mount(self, readonly, mkfs):
        pass

    def umount(self):
        pass

    def open(self, path, mode):
        flags = "".join(c for c in mode if c not in "bt") or "r"
        fd = _check(hostfs.open(self._root, self._path(path), flags))
        return HostFile(fd, mode, 0)

    def ilistdir(self, path):
        listing = _check(hostfs.listdir(self._root, self._path(path))).split("\0")
        return iter([(listing[i], int(listing[i + 1]), 0, int(listing[i + 2]))
                     for i in range(0, len(listing) - 1, 3)])

    def stat(self, path):
        st = _check(hostfs.stat(self._root, self._path(path)))
        mode, size, mtime = (int(f) for f in st.split())
        return (mode, 0, 0, 0, 0, 0, size, mtime, mtime, mtime)

    def statvfs(self, path):
        block, blocks, free = (int(f) for f in _check(hostfs.statvfs(self._root)).split())
        return (block, block, blocks, free, free, 0, 0, 0, 0, 255)

    def mkdir(self, path):
        _check(hostfs.mkdir(self._root, self._path(path)))

    def remove(self, path):
        _check(hostfs.remove(self._root, self._path(path)))

    rmdir = remove

    def rename(self, old, new):
        _check(hostfs.rename(self._root, self._path(old), self._path(new)))

    def chdir(self, path):
        path = self._path(path)
        if not self.stat(path)[0] & _S_IFDIR:
            raise OSError(20)  # ENOTDIR
        self._cwd = path

    def getcwd(self):
        return self._cwd
