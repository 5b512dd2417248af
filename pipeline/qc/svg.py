"""Tiny inline-SVG charts for the self-contained report (no JavaScript, no network, no plotting dependency)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f")


def fmt(v: float | None) -> str:
    if v is None:
        return "n/a"
    a = abs(v)
    if a != 0 and (a >= 1e5 or a < 1e-3):
        return f"{v:.2e}"
    if a >= 100:
        return f"{v:.0f}"
    return f"{v:.3g}"


def histogram(
    edges: Sequence[float],
    series: Sequence[tuple[str, Sequence[int]]],
    title: str,
    width: int = 380,
    height: int = 170,
    normalise: bool | None = None,
) -> str:
    """Histogram SVG. One series: bars of counts. Several: step lines of the fraction per bin, with a legend."""
    nb = len(edges) - 1
    if nb < 1 or not series:
        return ""
    multi = len(series) > 1 if normalise is None else normalise
    ml, mr, mt, mb = 44, 8, 20, 30
    leg_h = 14 * ((len(series) + 2) // 3) if multi else 0
    h_tot = height + leg_h
    pw, ph = width - ml - mr, height - mt - mb
    vals = []
    for _, counts in series:
        tot = max(1, sum(counts))
        vals.append([c / tot for c in counts] if multi else list(counts))
    ymax = max((max(v) for v in vals if v), default=1) or 1
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{h_tot}" '
        f'viewBox="0 0 {width} {h_tot}" role="img" aria-label="{escape(title)}">',
        f'<text x="{ml}" y="13" class="ct">{escape(title)}</text>',
        f'<line x1="{ml}" y1="{mt + ph}" x2="{ml + pw}" y2="{mt + ph}" class="ax"/>',
        f'<line x1="{ml}" y1="{mt}" x2="{ml}" y2="{mt + ph}" class="ax"/>',
    ]
    bw = pw / nb
    for i, series_vals in enumerate(vals):
        color = PALETTE[i % len(PALETTE)] if series[i][0] != "other" else "#999"
        if not multi:
            for j, v in enumerate(series_vals):
                if v <= 0:
                    continue
                bh = ph * v / ymax
                out.append(
                    f'<rect x="{ml + j * bw:.1f}" y="{mt + ph - bh:.1f}" width="{max(bw - 1, 0.5):.1f}" '
                    f'height="{bh:.1f}" fill="{color}"><title>{fmt(edges[j])} .. {fmt(edges[j + 1])}: {int(v)}</title></rect>'
                )
        else:
            pts = []
            for j, v in enumerate(series_vals):
                y = mt + ph - ph * v / ymax
                pts += [f"{ml + j * bw:.1f},{y:.1f}", f"{ml + (j + 1) * bw:.1f},{y:.1f}"]
            out.append(f'<polyline points="{" ".join(pts)}" fill="none" stroke="{color}" stroke-width="1.6"/>')
    for frac, anchor in ((0.0, "start"), (0.5, "middle"), (1.0, "end")):
        x = ml + pw * frac
        v = edges[0] + (edges[-1] - edges[0]) * frac
        out.append(f'<text x="{x:.1f}" y="{mt + ph + 14}" text-anchor="{anchor}" class="tk">{fmt(v)}</text>')
    ylab = f"{ymax:.0%}" if multi else str(int(ymax))
    out.append(f'<text x="{ml - 4}" y="{mt + 8}" text-anchor="end" class="tk">{ylab}</text>')
    out.append(f'<text x="{ml - 4}" y="{mt + ph}" text-anchor="end" class="tk">0</text>')
    if multi:
        for i, (name, counts) in enumerate(series):
            color = PALETTE[i % len(PALETTE)] if name != "other" else "#999"
            x = ml + (i % 3) * (pw / 3)
            y = height + 14 * (i // 3) - 2
            label = f"{name} (n={sum(counts)})"
            out.append(f'<rect x="{x:.1f}" y="{y - 8}" width="10" height="3" fill="{color}"/>')
            out.append(f'<text x="{x + 13:.1f}" y="{y - 3}" class="tk">{escape(label[:24])}</text>')
    out.append("</svg>")
    return "".join(out)


def bars(items: Sequence[tuple[str, float]], title: str, width: int = 380, unit: str = "", colors: dict | None = None) -> str:
    """Horizontal bar chart of (label, value)."""
    if not items:
        return ""
    ml, mr, row = 130, 60, 18
    height = 24 + row * len(items)
    vmax = max((v for _, v in items), default=1) or 1
    pw = width - ml - mr
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f'<text x="4" y="13" class="ct">{escape(title)}</text>',
    ]
    for i, (label, v) in enumerate(items):
        y = 22 + i * row
        w = pw * max(v, 0) / vmax
        color = (colors or {}).get(label, PALETTE[0])
        out.append(f'<text x="{ml - 6}" y="{y + 11}" text-anchor="end" class="tk">{escape(str(label)[:22])}</text>')
        out.append(f'<rect x="{ml}" y="{y}" width="{max(w, 0.5):.1f}" height="{row - 4}" fill="{color}"/>')
        out.append(f'<text x="{ml + w + 4:.1f}" y="{y + 11}" class="tk">{escape(fmt(float(v)))}{escape(unit)}</text>')
    out.append("</svg>")
    return "".join(out)
