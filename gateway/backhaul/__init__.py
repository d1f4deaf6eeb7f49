"""From accepted records to the broker: the durable queue, CBOR batches and the MQTT link and
publisher that delete only what the broker acknowledged."""
