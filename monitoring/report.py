"""A check's HTML report: its verdict, figures and, where it compared two samples, their histograms drawn
as inline SVG (no plotting library, opens in any browser). Linked from the check's metadata in Dagster."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

WIDTH, HEIGHT, BINS = 560, 180, 20


def _histogram_svg(reference: np.ndarray, current: np.ndarray) -> str:
    both = np.concatenate([reference, current])
    low, high = float(both.min()), float(both.max())
    edges = np.linspace(low, high if high > low else low + 1, BINS + 1)
    shares = [np.histogram(v, edges)[0] / max(len(v), 1) for v in (reference, current)]
    top = max(float(s.max()) for s in shares) or 1
    bar = WIDTH / BINS
    parts = [f'<svg width="{WIDTH}" height="{HEIGHT + 20}" xmlns="http://www.w3.org/2000/svg">']
    for share, colour, offset in ((shares[0], "#4a78b0", 0), (shares[1], "#d9772b", bar / 2)):
        for i, value in enumerate(share):
            h = HEIGHT * value / top
            x = i * bar + offset
            parts.append(
                f'<rect x="{x:.1f}" y="{HEIGHT - h:.1f}" width="{bar / 2 - 1:.1f}" height="{h:.1f}" '
                f'fill="{colour}"/>'
            )
    parts.append(f'<text x="0" y="{HEIGHT + 15}" font-size="11">{low:.3g}</text>')
    parts.append(f'<text x="{WIDTH - 40}" y="{HEIGHT + 15}" font-size="11">{high:.3g}</text>')
    parts.append("</svg>")
    return "".join(parts)


def write_report(
    folder: Path,
    check_name: str,
    summary: str,
    figures: dict,
    samples: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    method: str = "",
) -> Path:
    """Write ``<folder>/<check>/<timestamp>.html`` and ``latest.html`` beside it; returns the former."""
    folder = Path(folder) / re.sub(r"[^A-Za-z0-9_.-]", "_", check_name)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    rows = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in figures.items()
    )
    plots = "".join(
        f"<h3>{html.escape(name)}</h3><p><span style='color:#4a78b0'>■ reference</span> "
        f"<span style='color:#d9772b'>■ current</span></p>{_histogram_svg(ref, cur)}"
        for name, (ref, cur) in (samples or {}).items()
        if len(ref) and len(cur)
    )
    page = (
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(check_name)}</title>"
        f"<body style='font-family:sans-serif'><h1>{html.escape(check_name)}</h1>"
        f"<p>{html.escape(stamp)}</p><p><b>{html.escape(summary)}</b></p>"
        f"<p>Method: {html.escape(method)}</p><table border='1' cellpadding='4'>{rows}</table>{plots}</body>"
    )
    path = folder / f"{stamp}.html"
    path.write_text(page, encoding="utf-8")
    (folder / "latest.html").write_text(page, encoding="utf-8")
    return path
