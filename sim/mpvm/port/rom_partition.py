"""vfs.rom_ioctl over the board's romfs partition, a host file, so `mpremote romfs deploy` works.

Runs inside the VM on the `_chip` calls of sim/mpvm/serial_repl.mjs; port/_boot.py puts it in
`vfs`. The VM's own rom_ioctl only reads (it answers EINVAL to erase and write). Here the
partition is read into the heap on first use only (a tool querying or deploying), erases and
writes go to the host file at once, as to flash, and the next boot mounts the new image at /rom.
Operations and answers follow extmod/vfs_rom_ioctl.c and ports/esp32.
"""

import _chip
import uctypes
import vfs

_SIZE = _chip.romfs_size()  # 0: the board has no romfs partition
_BLOCK = 4096  # the ESP32's flash erase block
_MIN_WRITE = 4
_EINVAL = -22
_ENODEV = -19
_part = None


def _partition():
    global _part
    if _part is None:
        _part = bytearray(_SIZE)
        _chip.romfs_read(uctypes.addressof(_part), _SIZE)
    return _part


def _store(offset, n):
    _chip.romfs_write(uctypes.addressof(_part) + offset, offset, n)


def rom_ioctl(op, *args):
    if not _SIZE:
        return vfs.rom_ioctl(op, *args)
    if op == 1:  # number of partitions
        return 1
    if not args or args[0] != 0:
        return _ENODEV
    if op == 2:  # the partition's contents
        return memoryview(_partition())
    if op == 3:  # prepare to write: erase (id, length) or (id, offset, length)
        offset, n = (0, args[1]) if len(args) == 2 else (args[1], args[2])
        if offset < 0 or offset % _BLOCK or offset + n > _SIZE:
            return _EINVAL
        n = min(_SIZE - offset, (n + _BLOCK - 1) // _BLOCK * _BLOCK)
        part = _partition()
        part[offset:offset + n] = b"\xff" * n
        _store(offset, n)
        return _MIN_WRITE
    if op == 4:  # write (id, offset, data)
        offset, data = args[1], args[2]
        if offset < 0 or offset + len(data) > _SIZE:
            return _EINVAL
        _partition()[offset:offset + len(data)] = data
        _store(offset, len(data))
        return 0
    if op == 5:  # writing complete
        return 0
    if op == 6:  # erase block size
        return _BLOCK
    return _EINVAL
