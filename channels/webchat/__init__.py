"""Web chat (H5) adapter: bearer-token login, a JSON message endpoint and the static chat page."""

from channels.webchat.inbound import WebChatInput
from channels.webchat.outbound import WebChatOutput

__all__ = ["WebChatInput", "WebChatOutput"]
