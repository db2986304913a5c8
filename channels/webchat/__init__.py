"""Web chat (H5) adapter: bearer-token login, a JSON message endpoint and the static chat page."""

from channels.json_replies import WebChatOutput
from channels.webchat.inbound import WebChatInput

__all__ = ["WebChatInput", "WebChatOutput"]
