"""The foresight Transformer: a small BERT-style encoder over a customer's recent events, trained from scratch.

The sequence is a CLS-like token (profile, contact channel and calendar) followed by the events, newest first;
each event token is the sum of its type, channel, time-before-contact bucket and pooled attribute embeddings,
fed to `transformers.BertModel` as `inputs_embeds`. The logits over the intents seen in training are a linear head
on the CLS output plus, summed over events, a small per-event head on each event token (reasons to call add up).
Nothing is downloaded: the encoder is built from a `BertConfig`.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional
from transformers import BertConfig, BertModel

from foresight.dataset import Example
from foresight.features import TIME_BUCKETS, EncodedExamples, FeatureSpace, time_bucket, time_scale

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FEATURES_FILE = "features.json"
META_FILE = "meta.json"
PREDICT_BATCH = 1024
# Learning rate kept after each improving epoch (halved after one that does not improve): a constant rate
# overshoots once the loss is near its floor.
LR_DECAY = 0.8


@dataclass
class TrainConfig:
    seed: int = 0
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    max_events: int = 64
    batch_size: int = 256
    max_epochs: int = 30
    patience: int = 3
    # An epoch counts as better only if it lowers the validation log loss by this much: gains of 1e-4 are
    # noise, and chasing them cost a third of the training time at 100k customers for no accuracy.
    min_delta: float = 1e-3
    lr: float = 2e-3
    weight_decay: float = 0.01
    threads: int | None = None
    dropout: float = 0.1
    min_count: int = 5  # rarer event types, attribute keys and values map to UNK
    max_attrs: int = 6  # attributes per event token


class ForesightNetwork(nn.Module):
    """Token embeddings + BertModel; logits = a linear head on the CLS-like output + per-event logits summed."""

    def __init__(self, bert_config: BertConfig, features: FeatureSpace, n_intents: int) -> None:
        super().__init__()
        hidden = bert_config.hidden_size
        n_channels = len(features.channels)
        self.n_intents = n_intents
        self.bert = BertModel(bert_config, add_pooling_layer=False)
        # The encoder's word embeddings are the event-type embeddings (vocab_size = number of event types).
        self.channel = nn.Embedding(n_channels, hidden, padding_idx=0)
        self.time = nn.Embedding(TIME_BUCKETS, hidden)
        self.attr_key = nn.Embedding(len(features.attr_keys), hidden, padding_idx=0)
        self.attr_value = nn.Embedding(len(features.attr_values), hidden, padding_idx=0)
        # Numbers also enter continuously (a learned direction per key): quantile bins alone blur thresholds.
        self.attr_number = nn.Embedding(len(features.attr_keys), hidden, padding_idx=0)
        self.time_slope = nn.Parameter(torch.zeros(hidden))
        self.cls = nn.Parameter(torch.zeros(hidden))
        self.contact_channel = nn.Embedding(n_channels, hidden)
        self.hour = nn.Embedding(24, hidden)
        self.weekday = nn.Embedding(7, hidden)
        self.day = nn.Embedding(31, hidden)
        self.profile_value = nn.Embedding(len(features.profile_values), hidden, padding_idx=0)
        self.profile_numeric = nn.Linear(features.profile_numeric_width, hidden)
        self.head = nn.Sequential(nn.Dropout(bert_config.hidden_dropout_prob), nn.Linear(hidden, n_intents))
        # Each event also adds its own logits, from its token alone (type, attributes, age), summed over events:
        # reasons add up across events, and a per-event path cannot learn spurious interactions between them.
        # The encoder's CLS output carries the profile, the channel and what the events mean together.
        event_output = nn.Linear(2 * hidden, n_intents)
        nn.init.zeros_(event_output.weight)  # starts neutral: early steps learn the prior, not noise
        nn.init.zeros_(event_output.bias)
        self.event_head = nn.Sequential(
            nn.LayerNorm(hidden),
            nn.Linear(hidden, 2 * hidden),
            nn.GELU(),
            nn.Dropout(bert_config.hidden_dropout_prob),
            event_output,
        )
        for embedding in (
            self.channel,
            self.time,
            self.attr_key,
            self.attr_value,
            self.contact_channel,
            self.attr_number,
        ):
            nn.init.normal_(embedding.weight, std=0.02)
        for embedding in (self.hour, self.weekday, self.day, self.profile_value):
            nn.init.normal_(embedding.weight, std=0.02)
        with torch.no_grad():
            self.channel.weight[0].zero_()
            self.attr_key.weight[0].zero_()
            self.attr_value.weight[0].zero_()
            self.profile_value.weight[0].zero_()
            self.attr_number.weight[0].zero_()

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        attr_key = batch["attr_key"]
        attrs = (
            self.attr_key(attr_key)
            + self.attr_value(batch["attr_value"])
            + batch["attr_number"].unsqueeze(-1) * self.attr_number(attr_key)
        )  # [B, L, K, H]
        events = (
            self.bert.embeddings.word_embeddings(batch["event_type"])
            + self.channel(batch["event_channel"])
            + self.time(batch["time_bucket"])
            + batch["time_scale"].unsqueeze(-1) * self.time_slope
            + attrs.sum(dim=2)
        )
        calendar = batch["calendar"]
        first = (
            self.cls
            + self.contact_channel(batch["contact_channel"])
            + self.hour(calendar[:, 0])
            + self.weekday(calendar[:, 1])
            + self.day(calendar[:, 2])
            + self.profile_value(batch["profile_categorical"]).sum(dim=1)
            + self.profile_numeric(batch["profile_numeric"])
        )
        tokens = torch.cat([first.unsqueeze(1), events], dim=1)
        mask = batch.get("mask")
        attention_mask = None
        if mask is not None:
            attention_mask = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1).to(torch.long)
        # One position id for all: order and recency come from the time features, and absolute positions
        # would tie the encoder to the history lengths seen in training.
        positions = torch.zeros((1, tokens.shape[1]), dtype=torch.long)
        output = self.bert(inputs_embeds=tokens, attention_mask=attention_mask, position_ids=positions)
        hidden = output.last_hidden_state
        per_event = self.event_head(events)
        if mask is not None:
            per_event = per_event * mask.unsqueeze(-1).to(per_event.dtype)
        else:
            per_event = per_event * (batch["event_type"] != 0).unsqueeze(-1).to(per_event.dtype)
        result: torch.Tensor = self.head(hidden[:, 0]) + per_event.sum(dim=1)
        return result


def collate(encoded: EncodedExamples, index: np.ndarray) -> dict[str, torch.Tensor]:
    """Tensors for examples `index`, padded to the longest of them (at least one event slot)."""
    lengths = encoded.lengths[index]
    width = max(int(lengths.max()) if len(index) else 0, 1)
    positions = np.arange(width)
    present = positions[None, :] < lengths[:, None]
    rows = np.concatenate([encoded.rows, np.zeros(1, dtype=np.int64)])
    where = np.where(present, encoded.ptr[index][:, None] + positions[None, :], len(rows) - 1)
    event_rows = rows[where]  # row 0 (padding) where there is no event
    seconds = np.minimum(encoded.contact_ts[index][:, None] - encoded.event_ts[event_rows], encoded.time_horizon)
    scale = np.where(present, time_scale(seconds) / 17.0, 0.0).astype(np.float32)
    batch = {
        "event_type": torch.from_numpy(encoded.event_type[event_rows]),
        "event_channel": torch.from_numpy(encoded.event_channel[event_rows]),
        "time_bucket": torch.from_numpy(np.where(present, time_bucket(seconds), 0)),
        "attr_key": torch.from_numpy(encoded.event_attr_key[event_rows]),
        "attr_value": torch.from_numpy(encoded.event_attr_value[event_rows]),
        "attr_number": torch.from_numpy(encoded.event_attr_number[event_rows]),
        "time_scale": torch.from_numpy(scale),
        "contact_channel": torch.from_numpy(encoded.contact_channel[index]),
        "calendar": torch.from_numpy(encoded.contact_calendar[index]),
        "profile_categorical": torch.from_numpy(encoded.profile_categorical[index]),
        "profile_numeric": torch.from_numpy(encoded.profile_numeric[index]),
    }
    if not bool(present.all()):
        batch["mask"] = torch.from_numpy(present)
    return batch


def _bucketed_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of similar lengths: shuffle, sort within chunks of 50 batches, shuffle the batches."""
    order = rng.permutation(len(lengths))
    chunk = batch_size * 50
    batches: list[np.ndarray] = []
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def _length_sorted_batches(lengths: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    order = np.argsort(lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def _logits(network: ForesightNetwork, encoded: EncodedExamples, batch_size: int = PREDICT_BATCH) -> torch.Tensor:
    out = torch.empty((len(encoded), network.n_intents), dtype=torch.float32)
    was_training = network.training
    network.eval()
    with torch.inference_mode():
        for index in _length_sorted_batches(encoded.lengths, batch_size):
            out[torch.from_numpy(index)] = network(collate(encoded, index))
    network.train(was_training)
    return out


def _log_loss(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    return float(functional.cross_entropy(logits.double() / temperature, labels).item())


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature that minimises validation log loss (golden-section search over log T in [-2, 2])."""
    if len(labels) == 0:
        return 1.0
    low, high = -2.0, 2.0
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = _log_loss(logits, labels, math.exp(a)), _log_loss(logits, labels, math.exp(b))
    for _ in range(40):
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = _log_loss(logits, labels, math.exp(a))
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = _log_loss(logits, labels, math.exp(b))
    return math.exp((low + high) / 2)


@contextmanager
def _torch_settings(threads: int | None) -> Iterator[None]:
    """Deterministic algorithms and a thread count for the duration of training, restored afterwards."""
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    previous_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    if threads:
        torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous_deterministic, warn_only=previous_warn_only)
        torch.set_num_threads(previous_threads)


def _bert_config(features: FeatureSpace, config: TrainConfig) -> BertConfig:
    return BertConfig(
        vocab_size=len(features.event_types),
        hidden_size=config.hidden,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        intermediate_size=2 * config.hidden,
        max_position_embeddings=config.max_events + 1,
        type_vocab_size=1,
        pad_token_id=0,
        hidden_dropout_prob=config.dropout,
        # No dropout on attention weights: it costs a quarter of a CPU training step and data is plentiful.
        attention_probs_dropout_prob=0.0,
    )


class TransformerPredictor:
    """A trained foresight Transformer (foresight.predictor.Predictor) with its featurisation and temperature."""

    name = "transformer"

    def __init__(
        self,
        network: ForesightNetwork,
        features: FeatureSpace,
        intents: Sequence[str],
        *,
        bert_config: BertConfig,
        temperature: float = 1.0,
        max_events: int = 64,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.network = network.eval()
        self.features = features
        self.intents: tuple[str, ...] = tuple(intents)
        self.bert_config = bert_config
        self.temperature = temperature
        self.max_events = max_events
        self.meta: dict[str, Any] = dict(meta or {})

    def logits(self, examples: Sequence[Example]) -> torch.Tensor:
        """Temperature-scaled logits, one row per example."""
        if not examples:
            return torch.zeros((0, len(self.intents)))
        encoded = self.features.encode(examples, self.max_events)
        return _logits(self.network, encoded) / self.temperature

    def predict_proba(self, examples: Sequence[Example]) -> np.ndarray:
        logits = self.logits(examples)
        probabilities: np.ndarray = torch.softmax(logits.double(), dim=1).numpy()
        return probabilities

    def save(self, model_dir: Path) -> None:
        model_dir = Path(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        self.bert_config.to_json_file(str(model_dir / CONFIG_FILE))
        state = {key: value.detach().contiguous() for key, value in self.network.state_dict().items()}
        save_file(state, str(model_dir / WEIGHTS_FILE))
        self.features.save(model_dir / FEATURES_FILE)
        meta = {
            **self.meta,
            "format_version": FORMAT_VERSION,
            "model": self.name,
            "intents": list(self.intents),
            "temperature": self.temperature,
            "max_events": self.max_events,
        }
        (model_dir / META_FILE).write_text(json.dumps(meta, ensure_ascii=False, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, model_dir: Path) -> TransformerPredictor:
        model_dir = Path(model_dir)
        meta = json.loads((model_dir / META_FILE).read_text(encoding="utf-8"))
        if meta.get("format_version") != FORMAT_VERSION or meta.get("model") != cls.name:
            raise ValueError(f"{model_dir} does not hold a foresight transformer of format {FORMAT_VERSION}")
        features = FeatureSpace.load(model_dir / FEATURES_FILE)
        bert_config = BertConfig.from_json_file(str(model_dir / CONFIG_FILE))
        network = ForesightNetwork(bert_config, features, len(meta["intents"]))
        network.load_state_dict(load_file(str(model_dir / WEIGHTS_FILE)), strict=False)
        return cls(
            network,
            features,
            meta["intents"],
            bert_config=bert_config,
            temperature=float(meta["temperature"]),
            max_events=int(meta["max_events"]),
            meta=meta,
        )


def _labels(examples: Sequence[Example], index: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Positions of examples whose intent is known to the model, and their label ids."""
    keep = [i for i, e in enumerate(examples) if e.contact.intent in index]
    labels = [index[examples[i].contact.intent] for i in keep]  # type: ignore[index]
    return np.asarray(keep, dtype=np.int64), np.asarray(labels, dtype=np.int64)


def train_transformer(
    train: Sequence[Example],
    valid: Sequence[Example],
    config: TrainConfig | None = None,
    *,
    progress: bool = True,
) -> TransformerPredictor:
    """Trains from scratch on `train`; early stopping and temperature scaling on `valid` (split by time upstream)."""
    config = config or TrainConfig()
    started = time.perf_counter()
    intents = sorted({e.contact.intent for e in train if e.contact.intent is not None})
    if not intents:
        raise ValueError("no labelled training examples")
    intent_index = {intent: i for i, intent in enumerate(intents)}
    with _torch_settings(config.threads):
        torch.manual_seed(config.seed)
        rng = np.random.default_rng(config.seed)
        features = FeatureSpace.fit(train, min_count=config.min_count, max_attrs=config.max_attrs)
        keep_train, y_train = _labels(train, intent_index)
        keep_valid, y_valid = _labels(valid, intent_index)
        train_encoded = features.encode([train[i] for i in keep_train], config.max_events)
        features.set_time_horizon(train_encoded)
        valid_encoded = features.encode([valid[i] for i in keep_valid], config.max_events)
        train_labels = torch.from_numpy(y_train)
        valid_labels = torch.from_numpy(y_valid)
        encode_seconds = time.perf_counter() - started
        logger.info(
            "foresight: %d train / %d valid examples encoded in %.1fs", len(y_train), len(y_valid), encode_seconds
        )

        bert_config = _bert_config(features, config)
        network = ForesightNetwork(bert_config, features, len(intents))
        # No weight decay on embeddings, biases and norms (the usual BERT recipe).
        plain = {n for n, p in network.named_parameters() if p.ndim < 2 or "LayerNorm" in n or "embedding" in n.lower()}
        no_decay = [p for n, p in network.named_parameters() if n in plain]
        decay = [p for n, p in network.named_parameters() if n not in plain]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=config.lr,
        )
        steps_per_epoch = max(1, math.ceil(len(y_train) / config.batch_size))
        warmup = min(200, steps_per_epoch)
        lr = config.lr
        step = 0
        best_loss = math.inf
        best_state: dict[str, torch.Tensor] | None = None
        best_epoch = 0
        stale = 0
        history: list[dict[str, float]] = []
        train_lengths = train_encoded.lengths
        for epoch in range(1, config.max_epochs + 1):
            network.train()
            batches = _bucketed_batches(train_lengths, config.batch_size, rng)
            total, seen = 0.0, 0
            bar = _progress(batches, epoch, config.max_epochs, progress)
            for index in bar:
                step += 1
                for group in optimizer.param_groups:
                    group["lr"] = lr * min(1.0, step / warmup)
                logits = network(collate(train_encoded, index))
                loss = functional.cross_entropy(logits, train_labels[torch.from_numpy(index)])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(network.parameters(), 1.0)
                optimizer.step()
                total += float(loss.item()) * len(index)
                seen += len(index)
                if hasattr(bar, "set_postfix") and step % 20 == 0:
                    bar.set_postfix(loss=f"{total / seen:.4f}")
            train_loss = total / max(seen, 1)
            # Nothing to validate on: every epoch counts as an improvement, the last one is kept.
            valid_loss = _log_loss(_logits(network, valid_encoded), valid_labels) if len(y_valid) else train_loss
            history.append({"epoch": epoch, "train_loss": train_loss, "valid_log_loss": valid_loss, "lr": lr})
            improved = valid_loss < best_loss - config.min_delta or not len(y_valid)
            summary = f"epoch {epoch}: train loss {train_loss:.4f}  valid log loss {valid_loss:.4f}{' *' * improved}"
            if hasattr(bar, "write"):
                bar.write(summary)
            logger.info("foresight: %s (%.0fs)", summary, time.perf_counter() - started)
            if improved:
                best_loss, best_epoch, stale = valid_loss, epoch, 0
                best_state = copy.deepcopy(network.state_dict())
                lr *= LR_DECAY
            else:
                stale += 1
                lr *= 0.5  # a plateau: smaller steps often find the next improvement
                if stale >= config.patience:
                    break
        if best_state is not None:
            network.load_state_dict(best_state)
        network.eval()
        valid_logits = _logits(network, valid_encoded)
        temperature = fit_temperature(valid_logits, valid_labels)
        metrics: dict[str, Any] = {
            "n_train": len(y_train),
            "n_valid": len(y_valid),
            "best_epoch": best_epoch,
            "epochs_run": len(history),
            "valid_log_loss": _log_loss(valid_logits, valid_labels) if len(y_valid) else None,
            "valid_log_loss_calibrated": _log_loss(valid_logits, valid_labels, temperature) if len(y_valid) else None,
            "valid_top1": float((valid_logits.argmax(1) == valid_labels).double().mean()) if len(y_valid) else None,
            "encode_seconds": round(encode_seconds, 2),
            "train_seconds": round(time.perf_counter() - started, 2),
            "history": history,
        }
    meta = {
        "trained_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "seed": config.seed,
        "train_config": asdict(config),
        "metrics": metrics,
    }
    return TransformerPredictor(
        network,
        features,
        intents,
        bert_config=bert_config,
        temperature=temperature,
        max_events=config.max_events,
        meta=meta,
    )


def _progress(batches: list[np.ndarray], epoch: int, max_epochs: int, enabled: bool) -> Any:
    if not enabled:
        return batches
    from tqdm import tqdm

    return tqdm(batches, desc=f"epoch {epoch}/{max_epochs}", unit="batch", leave=False, dynamic_ncols=True)
