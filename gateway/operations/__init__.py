"""What an operator watches the gateway through: /metrics, health, the live status page, stats
and the command-line tools."""
