"""Modbus RTU, sans-I/O: CRC, PDU codec, RTU framing and timing, and the meter's register map.

The meter firmware (slave, MicroPython) and the gateway poller (master, CPython) share these
modules so that both ends agree on every byte. Nothing here touches a UART or a clock: callers
feed bytes and timestamps in and send the bytes that come out.

- crc: CRC-16/MODBUS
- pdu: function codes 03, 04, 06, 16 and exception responses: the messages, the slave side
- master: the master side (requests out, responses in and matched, lengths, transaction times)
- rtu: ADU framing (address | PDU | CRC), t1.5 / t3.5 timing, an incremental deframer
- line: the RS-485 line settings as the configuration registers code them
- register_map: the AMI meter's register map (SDM630-compatible floats, exact Wh, identity,
  config) and the slave's checks: all a meter loads
- registers: the same map as records with units, OBIS codes, SenML names and descriptions,
  decode_block and read_plan (gateway, docs)
"""
