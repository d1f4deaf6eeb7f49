"""Modbus RTU/TCP meter buses: the read plan, the poller that keeps each bus's timing, the
records of a poll, and operator writes on the bus."""
