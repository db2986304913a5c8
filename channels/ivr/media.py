"""What a call flow needs from a telephony transport, and what a transport tells the call flow.

Two transports carry calls: the SIP user agent (RTP audio, RFC 4733 and INFO keypad) and the Asterisk
AudioSocket server (TCP frames). Both hand the call flow signed 16-bit little-endian mono PCM at 8 kHz in
20 ms frames, keypad digits one at a time, and the end of the call; the call flow answers with audio to play,
a request to stop playing (barge-in), a transfer to a person, or a hangup.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

SAMPLE_RATE = 8000
FRAME_MS = 20
# Bytes of one 20 ms frame of 16-bit mono PCM at 8 kHz.
FRAME_BYTES = SAMPLE_RATE * FRAME_MS // 1000 * 2


@dataclass(frozen=True)
class CallInfo:
    """Who is calling whom, as the transport learnt it (SIP From/To, AudioSocket's UUID looked up)."""

    call_id: str
    caller: str  # the caller's number (user part of From, or what Asterisk passed), "" when withheld
    callee: str  # the number dialled
    transport: str  # "sip" or "audiosocket"
    direction: str = "inbound"  # or "outbound" (a reminder call the bank placed)
    # Extra facts of the transport (SIP headers worth keeping, the AudioSocket UUID).
    extras: dict[str, str] = field(default_factory=dict)


class CallControl(Protocol):
    """The transport's half of a call, as the call flow drives it."""

    info: CallInfo

    def play(self, pcm: bytes) -> None:
        """Queue 8 kHz 16-bit PCM for playback; the transport paces it out in real time, in 20 ms frames."""
        ...

    def stop_playback(self) -> None:
        """Drop whatever is still queued (the caller barged in)."""
        ...

    def playback_pending(self) -> float:
        """Seconds of queued audio not yet sent."""
        ...

    async def transfer(self, target: str, headers: dict[str, str]) -> bool:
        """Hand the call to `target` (a SIP URI or an agent queue); True when the transfer was accepted.

        `headers` carry what the agent needs (the conversation summary's lookup id); a transport that cannot
        transfer returns False and the call flow tells the caller so.
        """
        ...

    async def hangup(self) -> None:
        """End the call from the bank's side (after the goodbye has been played)."""
        ...


class CallHandler(Protocol):
    """The call flow's half of a call, as the transport drives it; one handler per call."""

    async def on_answer(self, control: CallControl) -> None:
        """The call is up: media flows both ways from now on."""
        ...

    async def on_audio(self, pcm: bytes) -> None:
        """One frame (or a few) of caller audio: 8 kHz 16-bit PCM."""
        ...

    async def on_dtmf(self, digit: str) -> None:
        """One keypad digit (0-9, *, #, A-D), delivered once per key press whatever the signalling."""
        ...

    async def on_hangup(self, reason: str) -> None:
        """The call ended from the far side (BYE, CANCEL, socket closed, media timeout); called once."""
        ...


class CallHandlerFactory(Protocol):
    def __call__(self, info: CallInfo) -> CallHandler: ...
