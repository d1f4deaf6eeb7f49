"""The edge LoRaWAN network server: packet forwarders in, de-duplicated and verified uplinks,
joins, sessions and the downlinks that answer them."""
