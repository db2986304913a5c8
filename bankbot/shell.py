"""A terminal chat through the gateway's web-chat API, so it gets the same redaction and code handling."""

from __future__ import annotations

import getpass
import json
import urllib.error
import urllib.request
from typing import Any

from rich.console import Console


def _post(url: str, body: dict[str, Any], token: str | None = None) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return dict(json.loads(response.read()))


def run_shell(gateway: str, customer_id: str, console: Console) -> int:
    try:
        session = _post(f"{gateway}/webchat/session", {"customer_id": customer_id})
    except urllib.error.HTTPError as error:
        console.print(f"[red]the gateway refused the demo login ({error.code}); is BANKBOT_DEV_LOGIN=1 set?[/]")
        return 2
    except urllib.error.URLError:
        console.print(f"[red]no gateway at {gateway}: start it with `make run` in another terminal[/]")
        return 2
    token = str(session["token"])
    console.print(f"signed in as {customer_id}. Type a message; buttons are numbered; Ctrl-D to quit.")
    buttons: list[dict[str, str]] = []
    wants_code = False
    while True:
        try:
            text = getpass.getpass("验证码> ") if wants_code else console.input("[bold]您> [/]")
        except (EOFError, KeyboardInterrupt):
            console.print()
            return 0
        if text.strip().isdigit() and buttons and 1 <= int(text.strip()) <= len(buttons) and not wants_code:
            text = buttons[int(text.strip()) - 1]["payload"]
        try:
            reply = _post(f"{gateway}/webchat/messages", {"text": text}, token)
        except urllib.error.HTTPError as error:
            console.print(f"[red]{error.code}: {error.read().decode(errors='replace')}[/]")
            continue
        buttons, wants_code = [], False
        for message in reply.get("messages", []):
            if message.get("text"):
                console.print(f"[cyan]助手>[/] {message['text']}")
            for button in message.get("buttons") or []:
                buttons.append(button)
                console.print(f"   [{len(buttons)}] {button['title']}")
            wants_code = wants_code or message.get("input") == "otp"
