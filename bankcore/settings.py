"""One settings object built from BANKBOT_* environment variables, with safe defaults for a laptop."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _secret_from_file(path: Path) -> str:
    """A laptop default: a random key kept under var/ so every local process shares it."""
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(key)
    return key


def _port_range(text: str) -> tuple[int, int]:
    """A range such as 20000-30000 as (20000, 30000); a malformed range is a configuration error, said at start."""
    low, _, high = text.partition("-")
    first, last = int(low), int(high or low)
    if not 1024 <= first <= last <= 65535:
        raise ValueError(f"BANKBOT_SIP_RTP_PORTS must be LOW-HIGH within 1024-65535, not {text!r}")
    return first, last


@dataclass(frozen=True)
class Settings:
    var_dir: Path
    database_url: str
    redis_url: str | None
    rasa_url: str
    rasa_token: str = field(repr=False)
    action_url: str
    gateway_host: str
    gateway_port: int
    secret_key: str = field(repr=False)
    dev_login: bool
    max_message_chars: int
    max_body_bytes: int
    otp_ttl_seconds: int
    otp_max_attempts: int
    transfer_single_limit: Decimal
    transfer_daily_limit: Decimal
    webchat_token_ttl_seconds: int
    log_dir: Path
    # Service token for POST /events; unset (empty) means the endpoint refuses every request.
    events_token: str = field(default="", repr=False)
    events_max_batch: int = 1000
    # The foresight model directory; when it holds no model the greeting is a plain one.
    foresight_model_dir: Path = Path("models/foresight")
    # Confidence above which the greeting names the predicted need; None: the threshold saved with the model.
    foresight_threshold: float | None = None
    # The risk rules file ops edit, and the learned risk score's directory (empty or missing: rules only).
    risk_rules_path: Path = PROJECT_ROOT / "bankcore" / "risk" / "rules.yaml"
    risk_model_dir: Path = Path("models/risk")
    # Hours within which the bank calls back about a held transfer (said to the customer).
    risk_callback_hours: int = 2
    # Speech: the Vosk model directory (unset: no recogniser; speech channels answer in text only), the
    # vosk-server-compatible WebSocket endpoint, recognition workers and open streams, and the TTS voice.
    vosk_model_path: Path | None = None
    asr_host: str = "127.0.0.1"
    asr_port: int = 2700
    asr_workers: int = 2
    asr_max_streams: int = 64
    # A WebSocket recognition session longer than this (wall clock) is closed with an error (a stuck client).
    asr_max_session_seconds: float = 3600.0
    tts_voice: str = "cmn-latn-pinyin"
    # Whether `bankbot run` starts the outbound-reminder worker (the test stack runs it only where a test asks).
    scheduler_enabled: bool = True
    # Where `bankbot models install` unpacks speech models.
    models_dir: Path = PROJECT_ROOT / "models"
    # WeChat Work (企业微信) self-built application: callback token and EncodingAESKey, corp id, app secret
    # and agent id; all unset: the /wecom/ routes answer 503. The API base is configurable (tests point it at
    # the local simulator).
    wecom_corp_id: str = ""
    wecom_token: str = field(default="", repr=False)
    wecom_encoding_aes_key: str = field(default="", repr=False)
    wecom_secret: str = field(default="", repr=False)
    wecom_agent_id: str = ""
    wecom_api_base: str = "https://qyapi.weixin.qq.com"
    # Callbacks whose timestamp is further than this from now are refused (0: no check, to replay vectors).
    wecom_replay_window_seconds: int = 300
    wecom_rate_limit_per_minute: int = 30
    # The WeChat mini-program: app id and secret, the WeChat API base, session token lifetime, and the
    # subscribe-message template of reminders (its data keys: thing1 what, time2 when, amount3 how much).
    miniprogram_app_id: str = ""
    miniprogram_app_secret: str = field(default="", repr=False)
    wechat_api_base: str = "https://api.weixin.qq.com"
    miniprogram_session_ttl_seconds: int = 7200
    miniprogram_reminder_template_id: str = ""
    miniprogram_rate_limit_per_minute: int = 60
    # Voice messages longer than this many seconds of audio are refused politely.
    voice_message_max_seconds: float = 60.0
    # The phone line: a SIP user agent on UDP (port 0: off) and an Asterisk AudioSocket server on TCP (port 0:
    # off). `sip_public_host` is the address callers' media reach (SDP and Contact); RTP uses ports in
    # `sip_rtp_ports`. Calls ring `sip_ring_seconds` before the answer. Transfers to a person go to
    # `ivr_transfer_uri` (a SIP URI; unset: the caller is told no agent can take the call). Outbound calls
    # (reminders) go through `sip_outbound_proxy` ("host:port" of the trunk) showing `sip_outbound_caller`.
    sip_host: str = "127.0.0.1"
    sip_port: int = 0
    sip_public_host: str = ""
    sip_rtp_ports: tuple[int, int] = (20000, 30000)
    sip_max_calls: int = 200
    sip_ring_seconds: float = 0.0
    sip_outbound_proxy: str = ""
    sip_outbound_caller: str = "95588"
    ivr_transfer_uri: str = ""
    audiosocket_host: str = "127.0.0.1"
    audiosocket_port: int = 0
    # The ops console: the NLU data it edits, and how long a staff session lasts without signing in again.
    nlu_data_dir: Path = PROJECT_ROOT / "nlu_data"
    ops_session_minutes: int = 480
    # The test stories testers run and save conversations into (tests point it at a temporary copy).
    test_stories_dir: Path = PROJECT_ROOT / "bot" / "tests"
    # Rasa's event broker (RabbitMQ, amqp://user:password@host:port/vhost; unset: no broker, no relay): Rasa
    # publishes every tracker event to the fanout exchange, bound to the durable queue the event relay consumes
    # into the cross-channel event store. The relay serves Prometheus metrics on loopback:port (0: off) and
    # stores up to `relay_batch_size` events per database transaction.
    amqp_url: str | None = field(default=None, repr=False)
    amqp_queue: str = "bankbot.rasa_events"
    amqp_exchange: str = "rasa-exchange"
    relay_metrics_port: int = 0
    relay_batch_size: int = 200
    # Conversations in Rasa's tracker store whose newest event is older than this many days are archived (when
    # an archive directory is set) and deleted by the daily retention job (0: keep them forever).
    tracker_retention_days: int = 180
    tracker_archive_dir: Path | None = None
    extra: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def tracker_store_url(self) -> str:
        """Where Rasa keeps its conversations: the bank's PostgreSQL database, or its own SQLite file."""
        if self.database_url.startswith("postgresql"):
            return self.database_url
        return f"sqlite:///{self.var_dir / 'tracker.db'}"

    @property
    def wecom_configured(self) -> bool:
        return bool(self.wecom_corp_id and self.wecom_token and self.wecom_encoding_aes_key)

    @property
    def miniprogram_configured(self) -> bool:
        return bool(self.miniprogram_app_id and self.miniprogram_app_secret)

    @property
    def rasa_urls(self) -> tuple[str, ...]:
        """Every Rasa server the gateway may use: BANKBOT_RASA_URLS (comma-separated; the cluster profile),
        else BANKBOT_RASA_URL alone. They must share one tracker store and one lock store."""
        listed = [url.strip().rstrip("/") for url in self.extra.get("BANKBOT_RASA_URLS", "").split(",")]
        return tuple(url for url in listed if url) or (self.rasa_url,)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        var_dir = Path(env.get("BANKBOT_VAR_DIR", str(PROJECT_ROOT / "var"))).resolve()
        secret = env.get("BANKBOT_SECRET_KEY") or _secret_from_file(var_dir / "secret.key")
        return cls(
            var_dir=var_dir,
            database_url=env.get("BANKBOT_DATABASE_URL", f"sqlite:///{var_dir / 'bankbot.db'}"),
            redis_url=env.get("BANKBOT_REDIS_URL") or None,
            rasa_url=env.get("BANKBOT_RASA_URL", "http://127.0.0.1:5005").rstrip("/"),
            rasa_token=env.get("BANKBOT_RASA_TOKEN", "") or secret[:32],
            action_url=env.get("BANKBOT_ACTION_URL", "http://127.0.0.1:5055/webhook"),
            gateway_host=env.get("BANKBOT_GATEWAY_HOST", "127.0.0.1"),
            gateway_port=int(env.get("BANKBOT_GATEWAY_PORT", "8080")),
            secret_key=secret,
            dev_login=_flag(env.get("BANKBOT_DEV_LOGIN")),
            max_message_chars=int(env.get("BANKBOT_MAX_MESSAGE_CHARS", "500")),
            max_body_bytes=int(env.get("BANKBOT_MAX_BODY_BYTES", str(64 * 1024))),
            otp_ttl_seconds=int(env.get("BANKBOT_OTP_TTL_SECONDS", "300")),
            otp_max_attempts=int(env.get("BANKBOT_OTP_MAX_ATTEMPTS", "3")),
            transfer_single_limit=Decimal(env.get("BANKBOT_TRANSFER_SINGLE_LIMIT", "50000")),
            transfer_daily_limit=Decimal(env.get("BANKBOT_TRANSFER_DAILY_LIMIT", "200000")),
            webchat_token_ttl_seconds=int(env.get("BANKBOT_WEBCHAT_TOKEN_TTL_SECONDS", "3600")),
            log_dir=Path(env.get("BANKBOT_LOG_DIR", str(var_dir / "log"))).resolve(),
            events_token=env.get("BANKBOT_EVENTS_TOKEN", ""),
            events_max_batch=int(env.get("BANKBOT_EVENTS_MAX_BATCH", "1000")),
            foresight_model_dir=Path(
                env.get("BANKBOT_FORESIGHT_MODEL_DIR", str(PROJECT_ROOT / "models" / "foresight"))
            ).resolve(),
            foresight_threshold=(
                float(env["BANKBOT_FORESIGHT_THRESHOLD"]) if env.get("BANKBOT_FORESIGHT_THRESHOLD") else None
            ),
            risk_rules_path=Path(
                env.get("BANKBOT_RISK_RULES", str(PROJECT_ROOT / "bankcore" / "risk" / "rules.yaml"))
            ).resolve(),
            risk_model_dir=Path(env.get("BANKBOT_RISK_MODEL_DIR", str(PROJECT_ROOT / "models" / "risk"))).resolve(),
            risk_callback_hours=int(env.get("BANKBOT_RISK_CALLBACK_HOURS", "2")),
            vosk_model_path=Path(env["BANKBOT_VOSK_MODEL"]).resolve() if env.get("BANKBOT_VOSK_MODEL") else None,
            asr_host=env.get("BANKBOT_ASR_HOST", "127.0.0.1"),
            asr_port=int(env.get("BANKBOT_ASR_PORT", "2700")),
            asr_workers=int(env.get("BANKBOT_ASR_WORKERS", "2")),
            asr_max_streams=int(env.get("BANKBOT_ASR_MAX_STREAMS", "64")),
            asr_max_session_seconds=float(env.get("BANKBOT_ASR_MAX_SESSION_SECONDS", "3600")),
            tts_voice=env.get("BANKBOT_TTS_VOICE", "cmn-latn-pinyin"),
            scheduler_enabled=env.get("BANKBOT_SCHEDULER", "1") != "0",
            models_dir=Path(env.get("BANKBOT_MODELS_DIR", str(PROJECT_ROOT / "models"))).resolve(),
            wecom_corp_id=env.get("BANKBOT_WECOM_CORP_ID", ""),
            wecom_token=env.get("BANKBOT_WECOM_TOKEN", ""),
            wecom_encoding_aes_key=env.get("BANKBOT_WECOM_ENCODING_AES_KEY", ""),
            wecom_secret=env.get("BANKBOT_WECOM_SECRET", ""),
            wecom_agent_id=env.get("BANKBOT_WECOM_AGENT_ID", ""),
            wecom_api_base=env.get("BANKBOT_WECOM_API_BASE", "https://qyapi.weixin.qq.com").rstrip("/"),
            wecom_replay_window_seconds=int(env.get("BANKBOT_WECOM_REPLAY_WINDOW_SECONDS", "300")),
            wecom_rate_limit_per_minute=int(env.get("BANKBOT_WECOM_RATE_LIMIT_PER_MINUTE", "30")),
            miniprogram_app_id=env.get("BANKBOT_MINIPROGRAM_APP_ID", ""),
            miniprogram_app_secret=env.get("BANKBOT_MINIPROGRAM_APP_SECRET", ""),
            wechat_api_base=env.get("BANKBOT_WECHAT_API_BASE", "https://api.weixin.qq.com").rstrip("/"),
            miniprogram_session_ttl_seconds=int(env.get("BANKBOT_MINIPROGRAM_SESSION_TTL_SECONDS", "7200")),
            miniprogram_reminder_template_id=env.get("BANKBOT_MINIPROGRAM_REMINDER_TEMPLATE_ID", ""),
            miniprogram_rate_limit_per_minute=int(env.get("BANKBOT_MINIPROGRAM_RATE_LIMIT_PER_MINUTE", "60")),
            voice_message_max_seconds=float(env.get("BANKBOT_VOICE_MESSAGE_MAX_SECONDS", "60")),
            sip_host=env.get("BANKBOT_SIP_HOST", "127.0.0.1"),
            sip_port=int(env.get("BANKBOT_SIP_PORT", "0")),
            sip_public_host=env.get("BANKBOT_SIP_PUBLIC_HOST", ""),
            sip_rtp_ports=_port_range(env.get("BANKBOT_SIP_RTP_PORTS", "20000-30000")),
            sip_max_calls=int(env.get("BANKBOT_SIP_MAX_CALLS", "200")),
            sip_ring_seconds=float(env.get("BANKBOT_SIP_RING_SECONDS", "0")),
            sip_outbound_proxy=env.get("BANKBOT_SIP_OUTBOUND_PROXY", ""),
            sip_outbound_caller=env.get("BANKBOT_SIP_OUTBOUND_CALLER", "95588"),
            ivr_transfer_uri=env.get("BANKBOT_IVR_TRANSFER_URI", ""),
            audiosocket_host=env.get("BANKBOT_AUDIOSOCKET_HOST", "127.0.0.1"),
            audiosocket_port=int(env.get("BANKBOT_AUDIOSOCKET_PORT", "0")),
            nlu_data_dir=Path(env.get("BANKBOT_NLU_DATA_DIR", str(PROJECT_ROOT / "nlu_data"))).resolve(),
            ops_session_minutes=int(env.get("BANKBOT_OPS_SESSION_MINUTES", "480")),
            test_stories_dir=Path(env.get("BANKBOT_TEST_STORIES_DIR", str(PROJECT_ROOT / "bot" / "tests"))).resolve(),
            amqp_url=env.get("BANKBOT_AMQP_URL") or None,
            amqp_queue=env.get("BANKBOT_AMQP_QUEUE") or "bankbot.rasa_events",
            amqp_exchange=env.get("BANKBOT_AMQP_EXCHANGE") or "rasa-exchange",
            relay_metrics_port=int(env.get("BANKBOT_RELAY_METRICS_PORT", "0")),
            relay_batch_size=max(1, int(env.get("BANKBOT_RELAY_BATCH_SIZE", "200"))),
            tracker_retention_days=int(env.get("BANKBOT_TRACKER_RETENTION_DAYS", "180")),
            tracker_archive_dir=(
                Path(env["BANKBOT_TRACKER_ARCHIVE_DIR"]).resolve() if env.get("BANKBOT_TRACKER_ARCHIVE_DIR") else None
            ),
            extra={k: v for k, v in env.items() if k.startswith("BANKBOT_")},
        )
