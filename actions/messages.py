"""Customer-facing text the actions compose line by line (fixed replies live in bot/domain responses)."""

from __future__ import annotations

ACCOUNT_KIND_NAMES = {"debit": "储蓄卡", "credit": "信用卡"}
CARD_STATUS_NAMES = {
    "active": "正常",
    "inactive": "待激活",
    "frozen": "已冻结",
    "lost": "已挂失",
    "replaced": "已换卡",
}

BALANCE_HEADER = "{surname}{title}，您的账户余额如下："
BALANCE_DEBIT_LINE = "· {name}（尾号{last4}）：可用余额 {balance} 元"
BALANCE_CREDIT_LINE = "· {name}（尾号{last4}）：可用额度 {available} 元，待还 {outstanding} 元"
NO_ACCOUNTS = "您名下没有可查询的账户。"

HISTORY_HEADER = "{scope}的交易明细（{count}笔）："
HISTORY_SCOPE_RECENT = "最近"
HISTORY_LINE = "· {when} {description} {signed_amount} 元，余额 {balance_after} 元"
HISTORY_EMPTY = "{scope}没有交易记录。"

FAILED_TRANSFER_LINE = "· {when} 向{payee}转账 {amount} 元未成功，原因：{reason}。{advice}"
FAILED_TRANSFER_HEADER = "查到您最近有{count}笔转账未成功："
FAILED_TRANSFER_NONE = "您最近没有失败的转账，所有转账均已成功处理。"
FAILURE_REASONS = {
    "payee_account_closed": ("收款账户已销户", "请与收款人核实新的账号后重新转账，资金未被扣减。"),
    "payee_account_invalid": ("收款账号或户名有误", "请核对收款人姓名和账号后重新转账，资金未被扣减。"),
    "insufficient_funds": ("账户余额不足", "请确认余额充足后重新转账。"),
    "over_daily_limit": ("超出当日转账限额", "可明天再试，或在手机银行调整限额。"),
    "account_frozen": ("账户处于冻结状态", "如需解冻请说“转人工”。"),
    "risk_rejected": ("交易存在风险被拦截", "如确认是本人操作，请说“转人工”核实。"),
    "risk_blocked": ("交易存在较高风险被拦截", "如确认是本人操作，请说“转人工”核实。"),
    "risk_hold": ("交易暂缓处理，等待我行致电核实", "工作人员核实后会为您办理。"),
    "risk_not_cleared": ("交易未通过风险核验", "请重新发起转账。"),
    "risk_unavailable": ("风险核验服务暂时不可用", "请稍后重新发起转账。"),
    "pin_locked": ("交易密码错误次数过多", "请到网点重置交易密码。"),
}
FAILURE_REASON_UNKNOWN = ("处理失败", "如有疑问请说“转人工”。")

SOURCE_ACCOUNT_BUTTON = "{name} 尾号{last4}（余额 {balance} 元）"
CARD_BUTTON = "{name} 尾号{last4}（{status}）"

STATEMENT = (
    "您的信用卡（尾号{last4}）本期账单 {statement_balance} 元，最低还款 {minimum_payment} 元，"
    "到期还款日 {due_date}。当前总欠款 {outstanding} 元，可用额度 {available} 元。"
)
REPAY_FULL_BUTTON = "全额还款 {amount} 元"
REPAY_MINIMUM_BUTTON = "最低还款 {amount} 元"

LOAN_LINE = "· {name}：下期还款日 {due_date}，应还 {amount} 元，剩余本金 {outstanding} 元"
LOAN_REPAY_BUTTON = "现在还款"
DEPOSIT_LINE = "· {name} {amount} 元，年利率 {rate}%，{maturity_date}到期（{days_left}），{renewal}"
DEPOSIT_RENEWAL = {True: "到期自动续存", False: "到期转入活期"}
DEPOSIT_DAYS_LEFT = "还有{days}天"
DEPOSIT_MATURED = "已到期"

BRANCH_HEADER = "为您找到以下网点："
BRANCH_LINE = "· {name}：{address}，营业时间 {hours}，电话 {phone}"

INTEREST_HEADER = "当前{product_scope}利率："
INTEREST_LINE = "· {product} {term}：年利率 {rate}%"
TERM_MONTHS = "{months}个月"
TERM_YEARS = "{years}年"
INTEREST_SCOPE_ALL = ""
EXCHANGE_LINE = (
    "{currency_name}（{currency}）：现汇买入价 {buy}，现汇卖出价 {sell}（每{unit}外币兑人民币，{as_of}更新）"
)
EXCHANGE_HEADER = "今日主要外币牌价（人民币）："
EXCHANGE_ROW = "· {currency_name} {currency}：每{unit}买入 {buy} / 卖出 {sell}"
CURRENCY_NAMES = {
    "USD": "美元",
    "EUR": "欧元",
    "JPY": "日元",
    "HKD": "港币",
    "GBP": "英镑",
    "AUD": "澳元",
    "CAD": "加元",
    "SGD": "新加坡元",
    "KRW": "韩元",
    "CNY": "人民币",
}
UNKNOWN_CURRENCY = "抱歉，暂不支持“{currency}”的牌价查询。"

FRAUD_FROZEN = "已冻结您尾号{cards}的卡片。"
FRAUD_NOTHING_FROZEN = ""
HANDOFF_REFERENCE = "RG{number:08d}"
HANDOFF_QUEUE_HIGH = "您已进入优先队列"
HANDOFF_QUEUE_NORMAL = "预计等待1-3分钟"
OPT_OUT_TOPICS = {
    "marketing": "营销推广信息",
    "reminders": "还款和到期提醒",
    "calls": "外呼电话",
    "all": "营销推广和提醒信息",
}

# Reminder topics (bankcore/reminders/rules.yaml) as the opt-out confirmation names them.
REMINDER_TOPICS = {
    "loan": "贷款还款提醒",
    "credit_card": "信用卡还款提醒",
    "card": "卡片到期提醒",
    "deposit": "存款到期提醒",
    "service": "服务通知",
}

FALLBACK_OTHER = "都不是，转人工"
INTENT_LABELS = {
    "check_balance": "查询余额",
    "transaction_history": "查询交易明细",
    "transfer_money": "转账",
    "failed_transfer_inquiry": "查询失败的转账",
    "credit_card_bill": "查信用卡账单",
    "credit_card_repay": "信用卡还款",
    "report_lost_card": "挂失银行卡",
    "replace_card": "补办银行卡",
    "activate_card": "激活新卡",
    "reset_password": "重置密码",
    "loan_repayment": "贷款还款",
    "deposit_maturity": "查询定期到期",
    "branch_lookup": "查找网点",
    "interest_rate": "查询利率",
    "exchange_rate": "查询汇率",
    "report_fraud": "举报诈骗",
    "human_handoff": "转人工服务",
    "complain": "投诉建议",
    "opt_out": "退订通知",
    "promise_to_pay": "约定还款时间",
    "greet": "打招呼",
    "goodbye": "结束对话",
    "thank": "表示感谢",
    "bot_challenge": "了解我是谁",
    "out_of_scope": "其他问题",
}

# Answer before asked: how the greeting names a predicted need ("王先生您好，请问是要{need}吗？").
FORESIGHT_SALUTATION = "{surname}{title}"
FORESIGHT_YES = "是"
FORESIGHT_NO = "不是"
FORESIGHT_NEEDS = {
    "check_balance": "查询账户余额",
    "transaction_history": "查询最近的交易明细",
    "transfer_money": "转账",
    "failed_transfer_inquiry": "查询那笔没有成功的转账",
    "credit_card_bill": "查询信用卡账单",
    "credit_card_repay": "还信用卡",
    "report_lost_card": "挂失银行卡",
    "replace_card": "补办或换领银行卡",
    "activate_card": "激活新卡",
    "reset_password": "重置密码",
    "loan_repayment": "了解贷款还款",
    "deposit_maturity": "查询快到期的定期存款",
    "branch_lookup": "查找附近的网点",
    "interest_rate": "查询存款利率",
    "exchange_rate": "查询外汇汇率",
    "report_fraud": "报告可疑交易",
    "human_handoff": "转人工服务",
    "complain": "反映问题或投诉",
}

RISK_ACK_BUTTON = "我已知晓风险，继续转账"
RISK_CANCEL_BUTTON = "取消转账"
RISK_FREEZE_NOTE = "为保护您的资金，您的{name}（尾号{last4}）已临时冻结，请携带身份证件到网点解除。"
RISK_ACTION_NAMES = {
    "allow": "放行",
    "step_up": "加强验证",
    "warn": "风险提示",
    "hold": "暂缓待核实",
    "block": "拦截",
}
# What the human agent reads first on a handoff caused or accompanied by risk decisions.
RISK_HANDOFF_SUMMARY = "风控{action}：转账{transfer} 向{payee}转账{amount}元。原因：{reasons}"
RISK_SUMMARY_LINE = "风控记录 {when} {subject} {action}（{reasons}）"
