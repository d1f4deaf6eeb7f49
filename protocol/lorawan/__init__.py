"""LoRaWAN 1.0.x (1.0.4 behaviour): frames, MAC commands, crypto, frame counters, regions, airtime."""
