"""What the voice layer itself says (reprompts, keypad guidance, amount checks): its one messages module."""

from __future__ import annotations

from dataclasses import dataclass

from voice.grammar import KOREAN_FILLERS, MANDARIN_FILLERS

# Reprompts when nothing was heard; the last prompt is said again after these.
NO_INPUT = ("您好，您还在吗？", "抱歉，我没有听到您的声音。")
# Reprompts when what was heard could not be understood.
NO_MATCH = "抱歉，我没有听清楚。"
# Added to a reprompt when the assistant waits for a closed answer.
YES_NO_HINT = "请说“确认”或“取消”，也可以按1确认，按2取消。"
CHOICE_HINT = "请说出您的选择，或按对应的数字键：{options}。"
# A secret is never taken by speech: it could be overheard, and its words would reach the transcript.
KEYPAD_ONLY = "为了您的资金安全，请不要说出密码或验证码，请在手机键盘上输入，以井号键结束。"
# A low-confidence amount is confirmed before it reaches the dialogue.
CONFIRM_AMOUNT = "我听到的金额是{amount}，对吗？" + YES_NO_HINT
REPEAT_AMOUNT = "好的，请再说一遍金额，或在键盘上输入金额，以井号键结束。"
OFFER_HUMAN = "抱歉，我没能听清您的需求，正在为您转接人工客服，请稍候。"
SILENCE_GOODBYE = "很久没有听到您的声音，本次通话先到这里，感谢您的来电，再见。"
RASA_UNAVAILABLE = "抱歉，系统繁忙，请稍后再试，或说“转人工”。"


@dataclass(frozen=True)
class Lexicon:
    """The phrases a grammar accepts for closed answers, per language of the recogniser's model.

    Mandarin is the product's language; a Korean lexicon lets tests exercise the grammar path with the only
    Vosk model obtainable here.
    """

    affirm: tuple[str, ...]
    deny: tuple[str, ...]
    # Decoy words listened for beside the answers, so other speech lands on a decoy and is rejected
    # (see voice.grammar: models without an [unk] word force every sound onto some grammar word).
    fillers: tuple[str, ...] = ()


MANDARIN = Lexicon(
    affirm=("是", "是的", "对", "对的", "确认", "确定", "好的", "好", "可以", "没错", "确认转账"),
    deny=("不", "不是", "不对", "取消", "不要", "算了", "不用了", "不确认"),
    fillers=MANDARIN_FILLERS,
)
KOREAN = Lexicon(affirm=("네", "예", "맞아요"), deny=("아니요", "아니", "취소"), fillers=KOREAN_FILLERS)
