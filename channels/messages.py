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
REQUEST_IN_PROGRESS = "您的上一条消息还在处理中，请稍候。"

# Binding a WeChat Work user, a mini-program user or a phone number to a customer (channels.binding).
BIND_WELCOME = (
    "您好，欢迎使用示范银行智能客服。您当前可以查询利率汇率、网点信息或转人工；"
    "如需办理账户业务，请回复“绑定”，用您在本行预留的手机号完成身份验证。"
)
BIND_ASK_PHONE = "请输入您在本行预留的11位手机号码（回复“取消”可退出绑定）。"
BIND_PHONE_INVALID = "手机号格式不正确，请输入11位手机号码，例如13800138000。还可以再试{attempts_left}次。"
BIND_CODE_SENT = (
    "如该号码（尾号{phone_tail}）已在本行登记，您将收到一条短信验证码，5分钟内有效。"
    "请直接回复6位验证码（回复“取消”可退出）。"
)
BIND_ASK_CODE = "请回复短信中的6位验证码，或回复“取消”退出绑定。"
BIND_WRONG_CODE = "验证码不正确，还可以再试{attempts_left}次。"
BIND_LOCKED = "验证未通过的次数过多，本次绑定已取消。请稍后回复“绑定”重新开始，或说“转人工”。"
BIND_EXPIRED = "验证码已过期，本次绑定已取消。请回复“绑定”重新获取验证码。"
BIND_TOO_MANY = "手机号多次输入有误，本次绑定已取消。请回复“绑定”重新开始，或说“转人工”。"
BIND_CANCELLED = "已取消绑定。您仍可以查询利率汇率、网点信息，或说“转人工”。"
BIND_DONE = "绑定成功！{name}您好，现在可以为您办理查询余额、转账、信用卡等账户业务了，请问需要什么帮助？"
BIND_ALREADY = "您已完成绑定，可以直接办理业务，例如“查余额”。"

# Voice messages on the chat channels.
VOICE_NOT_AVAILABLE = "抱歉，暂时无法识别语音消息，请改用文字输入。"
VOICE_NOT_UNDERSTOOD = "抱歉，没有听清您的语音，请再说一遍或改用文字输入。"
VOICE_TOO_LONG = "语音消息过长（上限{limit}秒），请分段发送或改用文字输入。"
VOICE_BAD_AUDIO = "语音格式无法识别，请重新录制或改用文字输入。"
UNSUPPORTED_MESSAGE = "抱歉，暂不支持这类消息，请发送文字或语音。"
CHANNEL_NOT_CONFIGURED = "该渠道尚未开通。"
INVALID_LOGIN_CODE = "登录凭证无效或已过期，请重新进入小程序。"
WECHAT_UNAVAILABLE = "微信服务暂时不可用，请稍后再试。"
INVALID_SIGNATURE = "签名校验失败。"
STALE_REQUEST = "请求已过期，请检查服务器时间。"

# The phone line (IVR).
# Said the moment a call is answered, while the caller is looked up and the greeting prepared.
IVR_HELLO = "您好，欢迎致电智能客服。"
IVR_WELCOME_GUEST = (
    "您的来电号码未登记为本行客户的预留手机号，"
    "您可以咨询存款利率、网点等公共服务；如需办理账户业务，请说“绑定”，或说“转人工”。"
)
IVR_WELCOME = "请问有什么可以帮您？"
IVR_PIN_PROMPT = "办理账户业务前，请用电话按键输入您的6位交易密码。"
IVR_PIN_OK = "身份验证通过。"
IVR_PIN_WRONG = "交易密码不正确，您还可以再试{attempts_left}次，请重新输入6位交易密码。"
IVR_PIN_LOCKED = (
    "交易密码错误次数过多，为保护您的账户安全，本次通话暂不能办理账户业务。您仍可咨询公共服务，或说“转人工”。"
)
IVR_PIN_EXPIRED = "密码输入已超时，请重新输入6位交易密码。"
IVR_NO_PIN = "您尚未设置交易密码，电话渠道暂不能办理账户业务。请到网点或手机银行设置后再试，您仍可咨询公共服务。"
IVR_NEEDS_PIN = "该业务需要先验证身份，请用电话按键输入您的6位交易密码。"
IVR_TRANSFER_FAILED = "抱歉，人工客服暂时无法接通，您可以继续和我对话，或稍后再拨。"
IVR_UNAVAILABLE = "抱歉，系统暂时繁忙，请稍后再拨。再见。"
IVR_MENU = "请直接说出您要办理的业务，也可以按键选择：{options}。"
# The keypad shortcuts offered after the PIN: key, what the caller hears, the intent it sends.
IVR_MENU_KEYS = (
    ("1", "查询余额", "/check_balance"),
    ("2", "信用卡账单", "/credit_card_bill"),
    ("3", "转账", "/transfer_money"),
    ("4", "挂失", "/report_lost_card"),
    ("0", "人工服务", "/human_handoff"),
)
