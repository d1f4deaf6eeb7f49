"""Real pymodbus servers serving the meter register map, for the poller's tests.

- `MapDevice`: a pymodbus device context that answers exactly as protocol/modbus/registers.py
  says a meter must (check_read / encode_block / check_write), counting the reads it served.
- `tcp_server(devices)`: a pymodbus ModbusTcpServer on 127.0.0.1, any free port.
- `SerialLine`: an RS-485 line made of two pseudo-terminal pairs and a byte relay. The gateway
  opens `line.port` (a symlink to its pty, like /dev/serial/by-id/...), a pymodbus
  ModbusSerialServer serves the meters on the other pty. `unplug()` closes the gateway's pty
  and deletes the symlink (a USB adapter pulled out); `plug()` makes a new pty behind the same
  path (plugged back in); the meters keep running. `corrupt(n)` flips a byte in the next n
  replies (line noise -> CRC errors).
"""

from __future__ import annotations

import asyncio
import os
import tty

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.datastore.context import ModbusBaseDeviceContext
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

from protocol.modbus import registers as regmap


class MapDevice(ModbusBaseDeviceContext):
    """One meter's registers; `values` maps register names to values (missing read as 0)."""

    def __init__(self, values: dict | None = None) -> None:
        self.values = dict(values or {})
        self.reads = 0
        self.writes = []

    def reset(self) -> None:
        pass

    def getValues(self, func_code, address, count=1):
        fc = 3 if func_code in (3, 6, 16) else func_code
        code = regmap.check_read(fc, address, count)
        if code:
            return ExcCodes(code)
        self.reads += 1
        return regmap.encode_block(fc, address, count, self.values)

    def setValues(self, func_code, address, values):
        code = regmap.check_write(address, list(values))
        if code:
            return ExcCodes(code)
        for i, v in enumerate(values):
            reg = next(r for r in regmap.HOLDING_REGISTERS if r.address == address + i)
            self.values[reg.name] = v
        self.writes.append((address, list(values)))
        return None


def context(devices: dict) -> ModbusServerContext:
    return ModbusServerContext(devices=devices, single=False)


async def tcp_server(devices: dict):
    """(server, port): serving `devices` {address: MapDevice}; unknown addresses get no answer."""
    server = ModbusTcpServer(context(devices), framer=FramerType.SOCKET,
                             address=("127.0.0.1", 0), ignore_missing_devices=True)
    await server.serve_forever(background=True)
    port = server.transport.sockets[0].getsockname()[1]
    return server, port


def _pty():
    master, slave = os.openpty()
    tty.setraw(slave)  # no echo, no line discipline before anyone opens it
    os.set_blocking(master, False)
    return master, slave


class SerialLine:
    def __init__(self, directory: str) -> None:
        self.port = os.path.join(directory, "ttyUSB-meters")
        self._loop = asyncio.get_running_loop()
        self._gw = None  # (master, slave) of the gateway's pty
        self._bus = _pty()  # the meters' pty: lives as long as the line
        self.bus_path = os.ttyname(self._bus[1])
        self._loop.add_reader(self._bus[0], self._from_bus)
        self._corrupt = 0
        self.server = None
        self.plug()

    async def serve(self, devices: dict, baudrate: int = 9600) -> None:
        self.server = ModbusSerialServer(context(devices), framer=FramerType.RTU,
                                         port=self.bus_path, baudrate=baudrate,
                                         ignore_missing_devices=True)
        await self.server.serve_forever(background=True)

    def plug(self) -> None:
        assert self._gw is None
        self._gw = _pty()
        name = os.ttyname(self._gw[1])
        tmp = self.port + ".new"
        os.symlink(name, tmp)
        os.replace(tmp, self.port)
        self._loop.add_reader(self._gw[0], self._from_gateway)

    def unplug(self) -> None:
        master, slave = self._gw
        self._gw = None
        self._loop.remove_reader(master)
        os.unlink(self.port)
        os.close(master)
        os.close(slave)

    def corrupt(self, n: int) -> None:
        self._corrupt += n

    def _from_gateway(self) -> None:
        try:
            data = os.read(self._gw[0], 4096)
        except OSError:
            return
        os.write(self._bus[0], data)

    def _from_bus(self) -> None:
        try:
            data = os.read(self._bus[0], 4096)
        except OSError:
            return
        if self._corrupt and len(data) > 3:
            self._corrupt -= 1
            data = data[:2] + bytes((data[2] ^ 0x55,)) + data[3:]
        if self._gw is not None:
            try:
                os.write(self._gw[0], data)
            except OSError:
                pass

    async def close(self) -> None:
        if self.server is not None:
            await self.server.shutdown()
        if self._gw is not None:
            self.unplug()
        self._loop.remove_reader(self._bus[0])
        os.close(self._bus[0])
        os.close(self._bus[1])

