"""Real SIP peers (Debian's baresip and SIPp) against the whole stack, inside a network namespace.

The suite in `tests/ivr/netns/` starts Rasa, the action server and the gateway with its phone line, then calls it;
it runs in a namespace where only loopback exists (`tools/run-in-netns.sh`), so no SIP or RTP packet can leave the
machine. Where namespaces cannot be made (no privilege), or the peers are not installed, it is skipped with the
reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.ivr.peers import baresip_available, in_netns, netns_available, sipp_available

pytestmark = [pytest.mark.sip, pytest.mark.rasa]
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(900)
def test_real_sip_peers_call_the_stack_in_an_isolated_network() -> None:
    if in_netns():
        pytest.skip("already inside the namespace: the suite runs directly")
    if not netns_available():
        pytest.skip("network namespaces are not available here (unshare -n needs root or CAP_SYS_ADMIN)")
    if not (sipp_available() and baresip_available()):
        pytest.skip("baresip or sipp is not installed (tools/ensure-apt.sh installs baresip-core and sip-tester)")
    command = [
        str(ROOT / "tools" / "run-in-netns.sh"),
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=",
        # Short: baresip 1.0.0 truncates the names of its recordings beyond about 128 characters of path.
        f"--basetemp={tempfile.mkdtemp(prefix='ivr-', dir='/tmp')}",
        "tests/ivr/netns",
    ]
    result = subprocess.run(
        command, cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=900, check=False
    )
    output = result.stdout + result.stderr
    if result.returncode == 77:
        pytest.skip(output.strip().splitlines()[-1] if output.strip() else "namespaces unavailable")
    assert result.returncode == 0, output[-12000:]
    assert " passed" in output and "skipped" not in output.splitlines()[-1], output[-3000:]
