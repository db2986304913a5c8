"""WeChat mini-program adapter: login, the platform API, inbound and outbound halves."""
