"""Prometheus metrics of the event relay, in a registry of its own (tests build several relays in one process)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# NLU confidences: the fallback threshold sits near 0.5-0.7, so resolve the upper half finely.
_CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 1.0)
# From the event in Rasa to its row committed here: tens of milliseconds when all is well, minutes after an outage.
_LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


@dataclass(frozen=True)
class RelayMetrics:
    registry: CollectorRegistry
    consumed: Counter
    stored: Counter
    duplicates: Counter
    skipped: Counter
    nlu_confidence: Histogram
    fallbacks: Counter
    handoffs: Counter
    lag: Histogram
    database_retries: Counter
    ack_failures: Counter
    last_stored_event_ts: Gauge
    reconnects: Counter

    @classmethod
    def create(cls) -> RelayMetrics:
        registry = CollectorRegistry(auto_describe=True)
        return cls(
            registry=registry,
            consumed=Counter(
                "bankbot_relay_rasa_events_consumed", "Rasa events taken from the broker.", registry=registry
            ),
            stored=Counter(
                "bankbot_relay_events_stored",
                "Cross-channel events stored (new rows), by type and public channel.",
                ("type", "channel"),
                registry=registry,
            ),
            duplicates=Counter(
                "bankbot_relay_events_duplicate",
                "Events already stored (redelivered or re-published), kept once.",
                registry=registry,
            ),
            skipped=Counter(
                "bankbot_relay_rasa_events_skipped",
                "Rasa events that become no stored event, by reason (not_relayed, no_customer, system_message, "
                "invalid, undecodable...).",
                ("reason",),
                registry=registry,
            ),
            nlu_confidence=Histogram(
                "bankbot_nlu_confidence",
                "NLU confidence of customers' typed messages (button payloads excluded), by gateway channel.",
                ("channel",),
                buckets=_CONFIDENCE_BUCKETS,
                registry=registry,
            ),
            fallbacks=Counter(
                "bankbot_fallbacks",
                "Fallbacks by gateway channel and source (nlu: the fallback intent; core: the default fallback).",
                ("channel", "source"),
                registry=registry,
            ),
            handoffs=Counter(
                "bankbot_handoffs", "Hand-offs to a human agent, by gateway channel.", ("channel",), registry=registry
            ),
            lag=Histogram(
                "bankbot_relay_lag_seconds",
                "From an event's time in Rasa to its row being committed here.",
                buckets=_LAG_BUCKETS,
                registry=registry,
            ),
            database_retries=Counter(
                "bankbot_relay_database_retries",
                "Batches whose commit failed and is retried (nothing acknowledged meanwhile).",
                registry=registry,
            ),
            ack_failures=Counter(
                "bankbot_relay_ack_failures",
                "Messages stored whose acknowledgement failed (channel lost); the broker redelivers them.",
                registry=registry,
            ),
            last_stored_event_ts=Gauge(
                "bankbot_relay_last_stored_event_timestamp_seconds",
                "Rasa timestamp of the newest event stored (Unix seconds).",
                registry=registry,
            ),
            reconnects=Counter(
                "bankbot_relay_broker_reconnects",
                "Times the broker connection was lost and re-established.",
                registry=registry,
            ),
        )
