"""LoRaWAN 1.0.x (1.0.4 behaviour): frames, MAC commands, crypto, frame counters, regions, airtime,
as a device needs them; network_side adds what only the network server does."""
