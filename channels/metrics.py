"""Prometheus metrics of the gateway, in a registry owned by one application (tests build many apps)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session

from bankcore.reminders import store as reminder_store
from bankcore.risk import store as risk_store

logger = logging.getLogger("channels.metrics")

# Rasa REST turns take 30-95 ms on this kind of machine; resolve that range finely, then seconds.
_RASA_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0)
# A whole turn adds the gateway's own work (a code look-up, redaction) to Rasa's; the bar is p95 <= 500 ms.
_TURN_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0)
# Recognition time over audio time: grammars run near 0.04, free decoding 0.65-1.05 on 2 cores; above 1 the
# recogniser falls behind the caller.
_RTF_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0)


@dataclass(frozen=True)
class GatewayMetrics:
    registry: CollectorRegistry
    turns: Counter
    rasa_latency: Histogram
    inbound: Counter
    outbound: Counter
    ack_latency: Histogram
    turn_latency: Histogram
    asr_real_time_factor: Histogram
    redis_fallbacks: Counter

    @classmethod
    def create(cls) -> GatewayMetrics:
        registry = CollectorRegistry(auto_describe=True)
        turns = Counter(
            "bankbot_gateway_turns",
            "Customer turns handled by the gateway, by channel and outcome.",
            ("channel", "outcome"),
            registry=registry,
        )
        rasa_latency = Histogram(
            "bankbot_gateway_rasa_request_seconds",
            "Time spent waiting for the Rasa server, by endpoint and outcome.",
            ("endpoint", "outcome"),
            buckets=_RASA_BUCKETS,
            registry=registry,
        )
        inbound = Counter(
            "bankbot_gateway_platform_callbacks",
            "Platform callbacks and requests received, by channel and outcome (accepted, duplicate, refused...).",
            ("channel", "outcome"),
            registry=registry,
        )
        outbound = Counter(
            "bankbot_gateway_platform_sends",
            "Messages sent through platform APIs, by channel and outcome (sent, partial, retry, failed).",
            ("channel", "outcome"),
            registry=registry,
        )
        ack_latency = Histogram(
            "bankbot_gateway_callback_ack_seconds",
            "Time from a platform callback's arrival to its acknowledgement, by channel.",
            ("channel",),
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=registry,
        )
        turn_latency = Histogram(
            "bankbot_gateway_turn_seconds",
            "Time from a customer's turn reaching the shared pipeline to its replies (or Rasa's failure), by channel.",
            ("channel",),
            buckets=_TURN_BUCKETS,
            registry=registry,
        )
        asr_real_time_factor = Histogram(
            "bankbot_asr_real_time_factor",
            "Speech recognition time divided by the audio's duration, per utterance, by channel.",
            ("channel",),
            buckets=_RTF_BUCKETS,
            registry=registry,
        )
        redis_fallbacks = Counter(
            "bankbot_gateway_redis_fallbacks",
            "Calls served from this process's memory because Redis was unavailable, by component"
            " (rate_limit, access_token).",
            ("component",),
            registry=registry,
        )
        return cls(
            registry=registry,
            turns=turns,
            rasa_latency=rasa_latency,
            inbound=inbound,
            outbound=outbound,
            ack_latency=ack_latency,
            turn_latency=turn_latency,
            asr_real_time_factor=asr_real_time_factor,
            redis_fallbacks=redis_fallbacks,
        )

    def observe_rasa(self, endpoint: str, outcome: str, seconds: float) -> None:
        self.rasa_latency.labels(endpoint=endpoint, outcome=outcome).observe(seconds)

    def count_turn(self, channel: str, outcome: str) -> None:
        self.turns.labels(channel=channel, outcome=outcome).inc()

    def count_inbound(self, channel: str, outcome: str) -> None:
        self.inbound.labels(channel=channel, outcome=outcome).inc()

    def count_outbound(self, channel: str, outcome: str) -> None:
        self.outbound.labels(channel=channel, outcome=outcome).inc()

    def observe_ack(self, channel: str, seconds: float) -> None:
        self.ack_latency.labels(channel=channel).observe(seconds)

    def observe_turn(self, channel: str, seconds: float) -> None:
        self.turn_latency.labels(channel=channel).observe(seconds)

    def observe_recognition(self, channel: str, audio_seconds: float, processing_seconds: float) -> None:
        """One utterance's recognition (thread-safe: the recogniser calls it from its worker threads)."""
        if audio_seconds > 0:
            self.asr_real_time_factor.labels(channel=channel).observe(processing_seconds / audio_seconds)

    def count_redis_fallback(self, component: str) -> None:
        self.redis_fallbacks.labels(component=component).inc()


class RiskDecisionCollector(Collector):
    """Risk decisions by kind and action, read from the shared database at scrape time: the decisions are
    made in the action servers, and the table is the one count every instance agrees on."""

    def __init__(self, session_factory: Callable[[], Session]) -> None:
        self._session_factory = session_factory

    @staticmethod
    def _family() -> CounterMetricFamily:
        return CounterMetricFamily(
            "bankbot_risk_decisions",
            "Transfer and repayment risk decisions stored, by kind and action.",
            labels=("kind", "action"),
        )

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield self._family()

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = self._family()
        try:
            with self._session_factory() as session:
                for kind, action, count in risk_store.counts(session):
                    family.add_metric((kind, action), count)
        except Exception:
            logger.warning("could not count risk decisions", exc_info=True)
        yield family


class ReminderStatusCollector(Collector):
    """Reminders by status (planned, due, dispatching, delivered, failed, cancelled, suppressed), read from the
    shared database at scrape time: the reminder workers change them, and every gateway reports the same counts."""

    def __init__(self, session_factory: Callable[[], Session]) -> None:
        self._session_factory = session_factory

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily("bankbot_reminders", "Reminders stored, by status.", labels=("status",))

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield self._family()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = self._family()
        try:
            with self._session_factory() as session:
                counts = reminder_store.counts_by_status(session)
        except Exception:
            logger.warning("could not count reminders", exc_info=True)
        else:
            # Every status of the state machine, zeros included, so a dashboard's series do not come and go.
            known = (*reminder_store.ACTIVE_STATUSES, *reminder_store.FINAL_STATUSES)
            for status in known:
                family.add_metric((status,), counts.get(status, 0))
            for status in sorted(set(counts) - set(known)):
                family.add_metric((status,), counts[status])
        yield family
