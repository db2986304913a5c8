"""Small server-rendered SVG charts for the console's dashboard: lines over time, stacked shares, ranked bars.

No script and no library: each function returns an `<svg>` element as markup, with every data point also in a
`<title>` (the browser shows it on hover, screen readers read it) and the figures in `data-` attributes for tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

PALETTE = ("#8b0000", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#17becf", "#bcbd22", "#e377c2", "#7f7f7f")
_WIDTH, _HEIGHT = 720, 240
_LEFT, _RIGHT, _TOP, _BOTTOM = 52, 12, 16, 44


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float | None]  # one per label; None: no data there (a gap in the line)


def percent(value: float) -> str:
    return f"{value * 100:.1f}%"


def decimal(value: float) -> str:
    return f"{value:.2f}"


def _attr(value: object) -> str:
    return escape(str(value), quote=True)


def _x_positions(count: int) -> list[float]:
    inner = _WIDTH - _LEFT - _RIGHT
    if count == 1:
        return [_LEFT + inner / 2]
    return [_LEFT + inner * i / (count - 1) for i in range(count)]


def _bands(count: int) -> list[float]:
    """Centres of `count` equal bands across the plot (bars stay inside the axes)."""
    inner = _WIDTH - _LEFT - _RIGHT
    return [_LEFT + inner * (i + 0.5) / count for i in range(count)]


def _nice(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least `value` (a readable axis top)."""
    if value <= 0:
        return 1.0
    scale = 10 ** math.floor(math.log10(value))
    return next(step * scale for step in (1, 2, 2.5, 5, 10) if step * scale >= value)


def _y(value: float, top: float) -> float:
    inner = _HEIGHT - _TOP - _BOTTOM
    return _TOP + inner * (1 - (value / top if top else 0))


def _axes(labels: Sequence[str], top: float, fmt: Callable[[float], str], xs: Sequence[float]) -> list[str]:
    parts = []
    for step in range(5):
        value = top * step / 4
        y = _y(value, top)
        parts.append(
            f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{_WIDTH - _RIGHT}" y2="{y:.1f}" stroke="#e5e5e5"/>'
            f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="#555">{fmt(value)}</text>'
        )
    # At most about 12 labels under the axis, evenly spread; every point keeps its own title anyway.
    every = max(1, -(-len(labels) // 12))
    for i, (label, x) in enumerate(zip(labels, xs, strict=True)):
        if i % every == 0:
            parts.append(
                f'<text x="{x:.1f}" y="{_HEIGHT - _BOTTOM + 16}" text-anchor="middle" font-size="11" '
                f'fill="#555">{escape(label)}</text>'
            )
    return parts


def _legend(names: Sequence[str]) -> list[str]:
    parts, x = [], float(_LEFT)
    for i, name in enumerate(names):
        color = PALETTE[i % len(PALETTE)]
        parts.append(
            f'<rect x="{x:.0f}" y="{_HEIGHT - 16}" width="10" height="10" fill="{color}"/>'
            f'<text x="{x + 14:.0f}" y="{_HEIGHT - 7}" font-size="11">{escape(name)}</text>'
        )
        x += 24 + 12 * len(name) + 8
    return parts


def _svg(title: str, body: list[str], chart: str) -> Markup:
    return Markup(
        f'<svg class="chart" data-chart="{_attr(chart)}" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'viewBox="0 0 {_WIDTH} {_HEIGHT}" width="{_WIDTH}" height="{_HEIGHT}" aria-label="{_attr(title)}">'
        f"<title>{escape(title)}</title>" + "".join(body) + "</svg>"
    )


def line_chart(
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    fmt: Callable[[float], str] = percent,
    top: float | None = None,
    chart: str = "",
) -> Markup:
    """Lines over `labels` (times); a None value breaks the line. `top` is the y-axis maximum (default: data)."""
    if not labels:
        return _svg(title, [f'<text x="{_WIDTH / 2}" y="{_HEIGHT / 2}" text-anchor="middle">无数据</text>'], chart)
    highest = max((v for s in series for v in s.values if v is not None), default=0.0)
    top = top if top is not None else _nice(highest * 1.05)
    xs = _x_positions(len(labels))
    body = _axes(labels, top, fmt, xs)
    for index, line in enumerate(series):
        color = PALETTE[index % len(PALETTE)]
        runs: list[list[tuple[float, float]]] = [[]]
        for x, value in zip(xs, line.values, strict=True):
            if value is None:
                runs.append([])
            else:
                runs[-1].append((x, _y(value, top)))
        for run in runs:
            if len(run) > 1:
                points = " ".join(f"{x:.1f},{y:.1f}" for x, y in run)
                body.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"/>')
        for label, x, value in zip(labels, xs, line.values, strict=True):
            if value is not None:
                body.append(
                    f'<circle cx="{x:.1f}" cy="{_y(value, top):.1f}" r="3" fill="{color}" '
                    f'data-series="{_attr(line.name)}" data-label="{_attr(label)}" data-value="{value:.6f}">'
                    f"<title>{escape(line.name)} {escape(label)}：{fmt(value)}</title></circle>"
                )
    body += _legend([s.name for s in series])
    return _svg(title, body, chart)


def stacked_shares(title: str, labels: Sequence[str], parts: Sequence[Series], *, chart: str = "") -> Markup:
    """One bar per label, split into each part's share of that label's total (counts in, shares drawn)."""
    if not labels:
        return _svg(title, [f'<text x="{_WIDTH / 2}" y="{_HEIGHT / 2}" text-anchor="middle">无数据</text>'], chart)
    xs = _bands(len(labels))
    inner = _WIDTH - _LEFT - _RIGHT
    width = max(2.0, min(40.0, inner / len(labels) * 0.7))
    body = _axes(labels, 1.0, percent, xs)
    for column, (label, x) in enumerate(zip(labels, xs, strict=True)):
        total = sum((p.values[column] or 0) for p in parts)
        if not total:
            continue
        bottom = 0.0
        for index, part in enumerate(parts):
            count = part.values[column] or 0
            if not count:
                continue
            share = count / total
            y_top, y_bottom = _y(bottom + share, 1.0), _y(bottom, 1.0)
            body.append(
                f'<rect x="{x - width / 2:.1f}" y="{y_top:.1f}" width="{width:.1f}" height="{y_bottom - y_top:.1f}" '
                f'fill="{PALETTE[index % len(PALETTE)]}" data-series="{_attr(part.name)}" data-label="{_attr(label)}" '
                f'data-value="{share:.6f}"><title>{escape(part.name)} {escape(label)}：{percent(share)}'
                f"（{count:g}）</title></rect>"
            )
            bottom += share
    body += _legend([p.name for p in parts])
    return _svg(title, body, chart)


def ranked_bars(title: str, items: Sequence[tuple[str, float]], *, chart: str = "") -> Markup:
    """Horizontal bars, largest first, each labelled with its count and share of the total."""
    total = sum(v for _, v in items) or 1.0
    row, left = 22, 170
    height = _TOP + row * max(1, len(items)) + 8
    body = []
    top = max((v for _, v in items), default=1.0) or 1.0
    for i, (name, value) in enumerate(items):
        y = _TOP + i * row
        length = (_WIDTH - left - 110) * value / top
        body.append(
            f'<text x="{left - 6}" y="{y + 14}" text-anchor="end" font-size="12">{escape(name)}</text>'
            f'<rect x="{left}" y="{y + 3}" width="{length:.1f}" height="{row - 6}" fill="{PALETTE[i % len(PALETTE)]}" '
            f'data-series="{_attr(name)}" data-value="{value:g}"><title>{escape(name)}：{value:g}</title></rect>'
            f'<text x="{left + length + 6:.1f}" y="{y + 14}" font-size="11">'
            f"{value:g}（{percent(value / total)}）</text>"
        )
    return Markup(
        f'<svg class="chart" data-chart="{_attr(chart)}" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'viewBox="0 0 {_WIDTH} {height}" width="{_WIDTH}" height="{height}" aria-label="{_attr(title)}">'
        f"<title>{escape(title)}</title>" + "".join(body) + "</svg>"
    )
