"""vfs.rom_ioctl over the board's romfs partitions, host files, so `mpremote romfs deploy` works.

Runs inside the VM on the `_chip` calls of sim/mpvm/serial_repl.mjs; port/_boot.py puts it in
`vfs`. The VM's own rom_ioctl only reads (it answers EINVAL to erase and write). Here the
partition is read into the heap on first use only (a tool querying or deploying), erases and
writes go to the host file at once, as to flash, and the next boot mounts partition 0's image at
/rom. A board may have several (A/B app slots: `mpremote romfs --partition 1 deploy`).
Operations and answers follow extmod/vfs_rom_ioctl.c and ports/esp32.
"""

import _chip
import uctypes
import vfs

_SIZE = _chip.romfs_size()  # 0: the board has no romfs partition
_COUNT = _chip.romfs_count()
_BLOCK = 4096  # the ESP32's flash erase block
_MIN_WRITE = 4
_EINVAL = -22
_ENODEV = -19
_parts = {}


def _partition(i):
    part = _parts.get(i)
    if part is None:
        part = _parts[i] = bytearray(_SIZE)
        _chip.romfs_read(i, uctypes.addressof(part), _SIZE)
    return part


def _store(i, offset, n):
    _chip.romfs_write(i, uctypes.addressof(_parts[i]) + offset, offset, n)


def rom_ioctl(op, *args):
    if not _SIZE:
        return vfs.rom_ioctl(op, *args)
    if op == 1:  # number of partitions
        return _COUNT
    if not args or not 0 <= args[0] < _COUNT:
        return _ENODEV
    i = args[0]
    if op == 2:  # the partition's contents
        return memoryview(_partition(i))
    if op == 3:  # prepare to write: erase (id, length) or (id, offset, length)
        offset, n = (0, args[1]) if len(args) == 2 else (args[1], args[2])
        if offset < 0 or offset % _BLOCK or offset + n > _SIZE:
            return _EINVAL
        n = min(_SIZE - offset, (n + _BLOCK - 1) // _BLOCK * _BLOCK)
        part = _partition(i)
        part[offset:offset + n] = b"\xff" * n
        _store(i, offset, n)
        return _MIN_WRITE
    if op == 4:  # write (id, offset, data)
        offset, data = args[1], args[2]
        if offset < 0 or offset + len(data) > _SIZE:
            return _EINVAL
        _partition(i)[offset:offset + len(data)] = data
        _store(i, offset, len(data))
        return 0
    if op == 5:  # writing complete
        return 0
    if op == 6:  # erase block size
        return _BLOCK
    return _EINVAL
