"""WeChat Work (企业微信) adapter: callback crypto, XML, the platform API, inbound and outbound halves."""
