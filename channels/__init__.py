"""Channel gateway (aiohttp): one adapter per channel, all talking to Rasa through one client."""
