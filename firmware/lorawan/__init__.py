"""The device side of LoRaWAN: the class-A end-device MAC (device.py) over protocol.lorawan."""
