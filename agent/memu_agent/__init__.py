"""memu-agent: the Memu OS on-device daemon (one aiohttp server, sd_notify, first-boot page)."""
