"""Every customer-facing Chinese string the gateway itself says (Rasa's replies live in bot/domain)."""

from __future__ import annotations

EMPTY_MESSAGE = "您好像还没有输入内容。请告诉我您想办理什么业务，例如“查余额”或“转账”。"
MESSAGE_TOO_LONG = "您的消息有 {length} 个字，超过了单条 {limit} 个字的上限，请精简后分开发送。"
FORBIDDEN_COMMAND = "抱歉，这条指令不能直接发送。如需输入验证码，请直接输入短信中的数字。"
ASSISTANT_UNAVAILABLE = "抱歉，智能助手暂时无法响应，请稍后再试。如有紧急情况，请拨打客服热线。"

# HTTP-level errors of the web chat API (shown by the page as a system notice).
BAD_REQUEST = "请求格式不正确，请刷新页面后重试。"
MISSING_TEXT = "请求中缺少消息内容。"
UNSUPPORTED_MEDIA_TYPE = "请求格式不受支持，请以 JSON 格式发送。"
BODY_TOO_LARGE = "请求内容过大（上限 {limit} 字节），请精简后再试。"
UNAUTHORIZED = "登录已失效，请重新登录。"
UNKNOWN_CUSTOMER = "未找到该客户，请检查客户号。"
INVALID_CUSTOMER_ID = "客户号格式不正确。"
RATE_LIMITED = "您发送得太快了，请稍等片刻再试。"
NOT_FOUND = "您访问的页面不存在。"
METHOD_NOT_ALLOWED = "不支持该请求方式。"
INTERNAL_ERROR = "抱歉，系统开小差了，请稍后再试。"
