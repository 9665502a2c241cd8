"""Daily charts of the case page (issue 18 §3) as inline SVG (no script, no external asset):
axes with units, gridlines, the pack's threshold drawn, the days that tripped a rule marked and the
sanction periods shaded on the same time axis."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta


@dataclass(frozen=True)
class Series:
    """One ``institution_daily`` column over days, in display units (hours, %)."""

    title_zh: str
    title_en: str
    unit: str
    points: Sequence[tuple[date, float]]
    threshold: float | None
    threshold_label: str
    #: a value beyond the threshold is bad when above (lag) or below (completeness, coverage)
    bad_above: bool
    y_max: float | None = None


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _nice_top(value: float) -> float:
    if value <= 0:
        return 1.0
    for step in (1, 2, 2.5, 5, 10):
        magnitude = 10 ** (len(str(int(value))) - 1)
        top = step * magnitude
        if top >= value:
            return float(top)
    return float(value)


def svg_chart(series: Series, chart_id: str, tripped: Iterable[date] = (),
              periods: Iterable[tuple[str, date, date | None]] = ()) -> str:
    """The chart, or ``""`` with fewer than two points. ``tripped`` days get a red mark under the axis
    and a red dot; ``periods`` (label, from, until-exclusive or None) are shaded."""
    pts = sorted(series.points)
    if len(pts) < 2:
        return ""
    w, h = 720, 240
    left, right, top, bottom = 64, 16, 28, 48
    first, last = pts[0][0], pts[-1][0]
    span = max((last - first).days, 1)
    values = [v for _, v in pts]
    y_top = series.y_max or _nice_top(max(max(values), series.threshold or 0) * 1.1)
    pw, ph = w - left - right, h - top - bottom

    def x(day: date) -> float:
        return left + (day - first).days / span * pw

    def y(value: float) -> float:
        return top + ph - max(0.0, min(value, y_top)) / y_top * ph

    parts = [f"<svg class='chart' id='{_esc(chart_id)}' width='{w}' height='{h}' viewBox='0 0 {w} {h}' role='img' "
             f"aria-label='{_esc(series.title_zh)} {_esc(series.title_en)}'>"]
    # sanction periods, shaded
    for label, start, until in periods:
        end = until or last + timedelta(days=1)
        if end <= first or start > last:
            continue
        x0, x1 = x(max(start, first)), x(min(end, last + timedelta(days=1)) - timedelta(days=1))
        parts.append(f"<rect class='sanction' x='{x0:.1f}' y='{top}' width='{max(x1 - x0, 2):.1f}' height='{ph}' "
                     f"fill='#f4c7a1' fill-opacity='0.45'><title>{_esc(label)} {start} → {until or '…'}</title></rect>")
    # gridlines and y axis labels
    for i in range(5):
        value = y_top * i / 4
        yy = y(value)
        parts.append(f"<line x1='{left}' x2='{w - right}' y1='{yy:.1f}' y2='{yy:.1f}' stroke='#e3e7ed'/>"
                     f"<text class='ytick' x='{left - 6}' y='{yy + 4:.1f}' font-size='11' text-anchor='end' "
                     f"fill='#5c6675'>{value:g}</text>")
    # x axis ticks: about 6 labelled days
    step = max(1, span // 6)
    day = first
    while day <= last:
        xx = x(day)
        parts.append(f"<line x1='{xx:.1f}' x2='{xx:.1f}' y1='{top + ph}' y2='{top + ph + 4}' stroke='#5c6675'/>"
                     f"<text class='xtick' x='{xx:.1f}' y='{top + ph + 16}' font-size='11' text-anchor='middle' "
                     f"fill='#5c6675'>{day.strftime('%m-%d')}</text>")
        day += timedelta(days=step)
    parts.append(f"<line x1='{left}' x2='{left}' y1='{top}' y2='{top + ph}' stroke='#5c6675'/>"
                 f"<line x1='{left}' x2='{w - right}' y1='{top + ph}' y2='{top + ph}' stroke='#5c6675'/>")
    parts.append(f"<text class='axis-label' x='{left + pw / 2:.0f}' y='{h - 8}' font-size='12' text-anchor='middle' "
                 f"fill='#1d2430'>业务日期 Business date（{first.year}）</text>")
    parts.append(f"<text class='axis-label' x='14' y='{top + ph / 2:.0f}' font-size='12' text-anchor='middle' "
                 f"fill='#1d2430' transform='rotate(-90 14 {top + ph / 2:.0f})'>{_esc(series.unit)}</text>")
    # threshold
    if series.threshold is not None:
        ty = y(series.threshold)
        parts.append(f"<line class='threshold' x1='{left}' x2='{w - right}' y1='{ty:.1f}' y2='{ty:.1f}' "
                     f"stroke='#b3261e' stroke-dasharray='6 4' stroke-width='1.5'/>"
                     f"<text class='threshold-label' x='{w - right - 4}' y='{ty - 5:.1f}' font-size='11' "
                     f"text-anchor='end' fill='#b3261e'>{_esc(series.threshold_label)}</text>")
    coords = " ".join(f"{x(d):.1f},{y(v):.1f}" for d, v in pts)
    parts.append(f"<polyline fill='none' stroke='#2f5d8a' stroke-width='2' points='{coords}'/>")
    by_day = dict(pts)
    for d in sorted(set(tripped)):
        if first <= d <= last:
            xx = x(d)
            parts.append(f"<rect class='tripped' x='{xx - 3:.1f}' y='{top + ph + 20}' width='6' height='6' "
                         f"fill='#b3261e'><title>{d} 触发规则 tripped</title></rect>")
            if d in by_day:
                parts.append(f"<circle cx='{xx:.1f}' cy='{y(by_day[d]):.1f}' r='4' fill='#b3261e'/>")
    parts.append(f"<text x='{left}' y='16' font-size='13' fill='#1d2430'>{_esc(series.title_zh)} "
                 f"<tspan fill='#5c6675'>{_esc(series.title_en)}</tspan></text></svg>")
    return "".join(parts)
