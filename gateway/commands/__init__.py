"""Operator commands over MQTT: who may send them (signatures), the ledger that survives a
restart, and the results sent back."""
