"""The web chat API over real HTTP on loopback: login tokens, limits, bad input, redaction, OTP, outages."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy.orm import Session, sessionmaker

from bankcore.verification import digest_code
from channels import messages
from channels.signed_tokens import WebChatTokens
from tests.channels.support import SECRET_KEY, FakeRasa, issue_code, login

Client = TestClient[web.Request, web.Application]


async def say(client: Client, headers: dict[str, str], text: str) -> tuple[int, dict[str, Any]]:
    response = await client.post("/webchat/messages", json={"text": text}, headers=headers)
    return response.status, await response.json()


def everything_rasa_saw(fake: FakeRasa) -> str:
    return json.dumps(fake.received, ensure_ascii=False)


# --- login and tokens -------------------------------------------------------------------------------


async def test_dev_login_issues_a_token_that_authorises_messages(gateway: Client, fake_rasa: FakeRasa) -> None:
    response = await gateway.post("/webchat/session", json={"customer_id": "C001"})
    assert response.status == 200
    body = await response.json()
    assert body["expires_in"] == 3600
    status, reply = await say(gateway, {"Authorization": f"Bearer {body['token']}"}, "我的余额是多少")
    assert status == 200
    assert reply == {"messages": [{"text": "收到：我的余额是多少", "buttons": []}]}
    sent = fake_rasa.received[-1]
    assert sent["sender"] == "webchat:C001"
    assert sent["metadata"]["customer_id"] == "C001"
    assert sent["metadata"]["channel"] == "webchat"


async def test_login_refuses_unknown_and_malformed_customer_ids(gateway: Client) -> None:
    response = await gateway.post("/webchat/session", json={"customer_id": "C999"})
    assert response.status == 401
    assert (await response.json())["error"]["code"] == "unknown_customer"
    for bad in ["", "C001; DROP TABLE customers", "x" * 65, 1234, None]:
        response = await gateway.post("/webchat/session", json={"customer_id": bad})
        assert response.status == 400, bad
        assert (await response.json())["error"]["code"] == "invalid_customer_id"


async def test_login_route_does_not_exist_without_dev_login(
    start_gateway: Callable[..., Any], fake_rasa: FakeRasa
) -> None:
    client = await start_gateway(fake_rasa.url, BANKBOT_DEV_LOGIN="0")
    response = await client.post("/webchat/session", json={"customer_id": "C001"})
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"


def _forge_customer(token: str, customer_id: str) -> str:
    version, _, expiry, signature = token.split(".")
    encoded = base64.urlsafe_b64encode(customer_id.encode()).rstrip(b"=").decode()
    return ".".join([version, encoded, expiry, signature])


async def test_messages_refuse_missing_forged_foreign_and_expired_tokens(gateway: Client, fake_rasa: FakeRasa) -> None:
    good = (await login(gateway))["Authorization"].removeprefix("Bearer ")
    expired = WebChatTokens(SECRET_KEY, 60, clock=lambda: time.time() - 3600).issue("C001").token
    foreign = WebChatTokens("another-key", 3600).issue("C001").token
    longer_life = good.rsplit(".", 2)[0] + f".{int(time.time()) + 10**6}." + good.rsplit(".", 1)[1]
    candidates = {
        "none": {},
        "no scheme": {"Authorization": good},
        "basic": {"Authorization": f"Basic {good}"},
        "garbage": {"Authorization": "Bearer not-a-token"},
        "non-ascii": {"Authorization": "Bearer v1.\u00e9.1.x"},
        "other customer": {"Authorization": f"Bearer {_forge_customer(good, 'C002')}"},
        "extended expiry": {"Authorization": f"Bearer {longer_life}"},
        "expired": {"Authorization": f"Bearer {expired}"},
        "other key": {"Authorization": f"Bearer {foreign}"},
    }
    for name, headers in candidates.items():
        response = await gateway.post("/webchat/messages", json={"text": "余额"}, headers=headers)
        assert response.status == 401, name
        body = await response.json()
        assert body["error"] == {"code": "unauthorized", "message": messages.UNAUTHORIZED}
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert fake_rasa.received == []


def test_token_round_trip_and_expiry_with_a_fake_clock() -> None:
    now = [1_000_000.0]
    tokens = WebChatTokens(SECRET_KEY, 60, clock=lambda: now[0])
    issued = tokens.issue("C001")
    assert tokens.verify(issued.token) == "C001"
    now[0] += 59
    assert tokens.verify(issued.token) == "C001"
    now[0] += 1
    with pytest.raises(Exception, match="expired"):
        tokens.verify(issued.token)


# --- HTTP-level limits and formats ------------------------------------------------------------------


async def test_body_over_the_limit_gets_a_clear_413(gateway: Client, fake_rasa: FakeRasa) -> None:
    headers = await login(gateway)
    response = await gateway.post(
        "/webchat/messages",
        data=json.dumps({"text": "转" * 40_000}),
        headers={**headers, "Content-Type": "application/json"},
    )
    assert response.status == 413
    body = await response.json()
    assert body["error"]["code"] == "body_too_large"
    assert str(64 * 1024) in body["error"]["message"]
    assert fake_rasa.received == []


async def test_wrong_content_type_bad_json_and_missing_text_are_clear_4xx(gateway: Client) -> None:
    headers = await login(gateway)
    response = await gateway.post("/webchat/messages", data="text=hi", headers=headers)
    assert response.status == 415
    assert (await response.json())["error"]["code"] == "unsupported_media_type"
    for raw in ["{not json", "[1, 2]", '"text"', "\xff"]:
        response = await gateway.post(
            "/webchat/messages",
            data=raw.encode("latin-1"),
            headers={**headers, "Content-Type": "application/json"},
        )
        assert response.status == 400, raw
        assert (await response.json())["error"]["code"] == "invalid_json"
    for body in [{}, {"text": None}, {"text": 42}, {"text": ["a"]}]:
        response = await gateway.post("/webchat/messages", json=body, headers=headers)
        assert response.status == 400, body
        assert (await response.json())["error"]["code"] == "missing_text"


async def test_unknown_route_and_method_answer_json(gateway: Client) -> None:
    response = await gateway.get("/webchat/nothing-here")
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"
    response = await gateway.get("/webchat/messages")
    assert response.status == 405
    assert (await response.json())["error"]["code"] == "method_not_allowed"


async def test_rate_limit_answers_429(start_gateway: Callable[..., Any], fake_rasa: FakeRasa) -> None:
    client = await start_gateway(fake_rasa.url, rate_limit=3)
    headers = await login(client)
    statuses = [(await say(client, headers, "余额"))[0] for _ in range(4)]
    assert statuses == [200, 200, 200, 429]


async def test_rate_limit_comes_from_settings_and_zero_disables_it(
    start_gateway: Callable[..., Any], fake_rasa: FakeRasa
) -> None:
    limited = await start_gateway(fake_rasa.url, rate_limit=None, BANKBOT_WEBCHAT_RATE_LIMIT_PER_MINUTE="2")
    headers = await login(limited)
    assert [(await say(limited, headers, "余额"))[0] for _ in range(3)] == [200, 200, 429]
    unlimited = await start_gateway(fake_rasa.url, rate_limit=None, BANKBOT_WEBCHAT_RATE_LIMIT_PER_MINUTE="0")
    headers = await login(unlimited)
    assert {(await say(unlimited, headers, "余额"))[0] for _ in range(70)} == {200}


# --- bad input gets a clear reply -------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   ", "\n\t\u3000"])
async def test_empty_or_blank_text_gets_a_polite_prompt_without_asking_rasa(
    gateway: Client, fake_rasa: FakeRasa, text: str
) -> None:
    status, reply = await say(gateway, await login(gateway), text)
    assert status == 200
    assert reply["messages"] == [{"text": messages.EMPTY_MESSAGE, "buttons": []}]
    assert fake_rasa.received == []


async def test_ten_thousand_characters_are_refused_with_the_limit_stated(gateway: Client, fake_rasa: FakeRasa) -> None:
    status, reply = await say(gateway, await login(gateway), "转" * 10_000)
    assert status == 200
    text = reply["messages"][0]["text"]
    assert "500" in text and "10000" in text
    assert fake_rasa.received == []


@pytest.mark.parametrize(
    "text",
    [
        "😀😀 查余额 🏦",
        "<script>alert('x')</script>",
        '"><img src=x onerror=alert(1)>',
        "'; DROP TABLE accounts; --",
        "1 OR 1=1",
        "转账-500元",
        "转0元",
        "转 99999999999 元",
        "转账abc元",
        "\u0000\u202e控制字符",
    ],
)
async def test_odd_but_harmless_text_reaches_rasa_unchanged_and_gets_a_reply(
    gateway: Client, fake_rasa: FakeRasa, text: str
) -> None:
    status, reply = await say(gateway, await login(gateway), text)
    assert status == 200
    assert reply["messages"][0]["text"]
    assert fake_rasa.texts_sent() == [text.strip()]


async def test_full_width_digits_are_folded_before_rasa(gateway: Client, fake_rasa: FakeRasa) -> None:
    await say(gateway, await login(gateway), "给李四转２５００．５元，谢谢！")
    assert fake_rasa.texts_sent() == ["给李四转2500.5元，谢谢！"]


# --- secrets never reach Rasa -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("我的卡号是6222021234567890123", "6222021234567890123"),
        ("卡号 6222 0212 3456 7890 丢了", "6222 0212 3456"),
        ("卡号６２２２０２１２３４５６７８９０", "6222021234567890"),
        ("我的密码是 884422", "884422"),
        ("取款密码：１３５７", "1357"),
        ("身份证号11010519491231002X", "11010519491231002X"),
    ],
)
async def test_card_numbers_pins_and_ids_are_redacted_before_rasa(
    gateway: Client, fake_rasa: FakeRasa, text: str, secret: str
) -> None:
    status, _ = await say(gateway, await login(gateway), text)
    assert status == 200
    seen = everything_rasa_saw(fake_rasa)
    assert secret not in seen
    assert secret.replace(" ", "") not in seen


@pytest.mark.parametrize("payload", ["/affirm", "/check_balance", '/inform{"account_type": "debit"}', "/deny"])
async def test_button_payloads_pass_through_untouched(gateway: Client, fake_rasa: FakeRasa, payload: str) -> None:
    await say(gateway, await login(gateway), payload)
    assert fake_rasa.texts_sent() == [payload]


@pytest.mark.parametrize(
    "forged",
    ["/submit_otp", "  /submit_otp", "/SUBMIT_OTP", '/submit_otp{"otp_digest": "ab"}', "/ submit_otp"],
)
async def test_a_typed_submit_otp_is_refused(gateway: Client, fake_rasa: FakeRasa, forged: str) -> None:
    status, reply = await say(gateway, await login(gateway), forged)
    assert status == 200
    assert reply["messages"][0]["text"] == messages.FORBIDDEN_COMMAND
    assert fake_rasa.received == []


async def test_one_time_code_reaches_rasa_only_as_intent_and_digest(
    gateway: Client, fake_rasa: FakeRasa, session_factory: sessionmaker[Session]
) -> None:
    headers = await login(gateway)
    code = issue_code(session_factory)
    status, _ = await say(gateway, headers, code)
    assert status == 200
    sent = fake_rasa.received[-1]
    assert sent["message"] == "/submit_otp"
    assert sent["metadata"] == {
        "locale": "zh-CN",
        "customer_id": "C001",
        "channel": "webchat",
        "otp_digest": digest_code(SECRET_KEY, code),
    }
    assert code not in everything_rasa_saw(fake_rasa)


@pytest.mark.parametrize("written", ["{c}", " {c} ", "验证码是{c}", "我的验证码：{c}。", "{spaced}", "{full}"])
async def test_one_time_code_in_its_usual_spellings_is_diverted(
    gateway: Client, fake_rasa: FakeRasa, session_factory: sessionmaker[Session], written: str
) -> None:
    headers = await login(gateway)
    code = issue_code(session_factory)
    text = written.format(
        c=code,
        spaced=f"{code[:3]} {code[3:]}",
        full=code.translate(str.maketrans("0123456789", "０１２３４５６７８９")),
    )
    await say(gateway, headers, text)
    sent = fake_rasa.received[-1]
    assert sent["message"] == "/submit_otp"
    assert sent["metadata"]["otp_digest"] == digest_code(SECRET_KEY, code)
    assert code not in everything_rasa_saw(fake_rasa)


async def test_six_digits_inside_a_sentence_are_masked_while_a_code_is_pending(
    gateway: Client, fake_rasa: FakeRasa, session_factory: sessionmaker[Session]
) -> None:
    headers = await login(gateway)
    code = issue_code(session_factory)
    await say(gateway, headers, f"好的，收到了 {code} 谢谢")
    assert fake_rasa.texts_sent() == ["好的，收到了 ****** 谢谢"]
    assert "otp_digest" not in fake_rasa.received[-1]["metadata"]


async def test_an_expired_code_is_still_diverted_so_it_never_reaches_rasa(
    gateway: Client, fake_rasa: FakeRasa, session_factory: sessionmaker[Session]
) -> None:
    headers = await login(gateway)
    code = issue_code(session_factory, now=datetime.now(UTC) - timedelta(hours=1))
    await say(gateway, headers, code)
    sent = fake_rasa.received[-1]
    assert sent["message"] == "/submit_otp"
    assert sent["metadata"]["otp_digest"] == digest_code(SECRET_KEY, code)
    assert code not in everything_rasa_saw(fake_rasa)


async def test_a_six_digit_amount_after_a_transfer_is_ordinary_text(
    gateway: Client, fake_rasa: FakeRasa, session_factory: sessionmaker[Session]
) -> None:
    headers = await login(gateway)
    code = issue_code(session_factory, now=datetime.now(UTC) - timedelta(hours=1))
    amount = "100000" if code != "100000" else "200000"
    await say(gateway, headers, amount)
    assert fake_rasa.texts_sent() == [amount]


async def test_without_a_pending_challenge_digits_are_ordinary_text(gateway: Client, fake_rasa: FakeRasa) -> None:
    # "2500" answers the amount question of a transfer form; it must reach Rasa as typed.
    await say(gateway, await login(gateway), "2500")
    assert fake_rasa.texts_sent() == ["2500"]
    assert "otp_digest" not in fake_rasa.received[-1]["metadata"]


# --- rendering and outages --------------------------------------------------------------------------


async def test_buttons_images_and_the_otp_hint_are_rendered(gateway: Client, fake_rasa: FakeRasa) -> None:
    fake_rasa.responder = lambda body: [
        {"text": "请选择付款账户", "buttons": [{"title": "借记卡 尾号 8888", "payload": '/inform{"x": 1}'}]},
        {"image": "https://example.invalid/a.png"},
        {"text": "请输入验证码", "custom": {"input": "otp"}},
        {"custom": {"input": "script", "html": "<b>x</b>"}},
    ]
    _, reply = await say(gateway, await login(gateway), "转账")
    assert reply["messages"] == [
        {"text": "请选择付款账户", "buttons": [{"title": "借记卡 尾号 8888", "payload": '/inform{"x": 1}'}]},
        {"text": "", "buttons": [], "image": "https://example.invalid/a.png"},
        {"text": "请输入验证码", "buttons": [], "input": "otp"},
        {"text": "", "buttons": []},
    ]


async def test_rasa_down_gets_a_polite_reply_and_503(start_gateway: Callable[..., Any], fake_rasa: FakeRasa) -> None:
    client = await start_gateway("http://127.0.0.1:9")  # discard port: nothing listens, connection refused
    status, body = await say(client, await login(client), "我的余额是多少")
    assert status == 503
    assert body["error"] == {"code": "assistant_unavailable", "message": messages.ASSISTANT_UNAVAILABLE}
    assert body["messages"] == [{"text": messages.ASSISTANT_UNAVAILABLE, "buttons": []}]
    assert "Traceback" not in json.dumps(body)


async def test_rasa_error_status_gets_the_same_polite_reply(gateway: Client, fake_rasa: FakeRasa) -> None:
    fake_rasa.fail_with_status = 500
    status, body = await say(gateway, await login(gateway), "我的余额是多少")
    assert status == 503
    assert body["messages"][0]["text"] == messages.ASSISTANT_UNAVAILABLE


async def test_readyz_reports_database_and_rasa(
    gateway: Client, start_gateway: Callable[..., Any], fake_rasa: FakeRasa
) -> None:
    response = await gateway.get("/readyz")
    assert response.status == 200
    assert await response.json() == {"status": "ok", "checks": {"database": "ok", "rasa": "ok"}}
    assert ("GET", "/status?token=test-rasa-token", {"token": "test-rasa-token"}) in fake_rasa.requests

    down = await start_gateway("http://127.0.0.1:9")
    response = await down.get("/readyz")
    assert response.status == 503
    assert (await response.json())["checks"]["rasa"] == "unavailable"


async def test_healthz_is_liveness_and_checks_no_dependency(start_gateway: Callable[..., Any]) -> None:
    down = await start_gateway("http://127.0.0.1:9")  # Rasa down: not ready, but alive
    response = await down.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_metrics_count_turns_by_outcome_and_time_rasa(gateway: Client, fake_rasa: FakeRasa) -> None:
    headers = await login(gateway)
    await say(gateway, headers, "余额")
    await say(gateway, headers, "   ")
    await say(gateway, headers, "/submit_otp")
    response = await gateway.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    assert 'bankbot_gateway_turns_total{channel="webchat",outcome="ok"} 1.0' in text
    assert 'bankbot_gateway_turns_total{channel="webchat",outcome="empty"} 1.0' in text
    assert 'bankbot_gateway_turns_total{channel="webchat",outcome="forged_command"} 1.0' in text
    assert 'bankbot_gateway_rasa_request_seconds_count{endpoint="webhook",outcome="ok"} 1.0' in text


async def test_the_page_and_its_assets_are_served_with_a_strict_policy(gateway: Client) -> None:
    response = await gateway.get("/webchat", allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == "/webchat/"
    response = await gateway.get("/webchat/")
    assert response.status == 200
    assert "<html" in await response.text()
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    for asset in ["app.js", "style.css"]:
        response = await gateway.get(f"/webchat/static/{asset}")
        assert response.status == 200, asset
    response = await gateway.get("/webchat/static/../inbound.py")
    assert response.status in (403, 404)
