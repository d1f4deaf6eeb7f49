"""The streetgrid gateway: a CPython asyncio service (LoRaWAN edge network server, Modbus poller,
durable queue and MQTT publisher). It does the I/O around the sans-I/O code in protocol/."""
