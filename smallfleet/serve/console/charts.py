"""Small inline SVG charts for the console: drawn on the server as markup (no script, no
image request, no plotting library on the request path), coloured with attributes so the
page's content security policy needs no inline styles."""

from __future__ import annotations

from html import escape

from markupsafe import Markup

WIDTH, HEIGHT, PAD = 640, 170, 28
BLUE, ORANGE, GREEN, GREY = "#1f6feb", "#e36209", "#1a7f37", "#6e7781"


def _frame(title: str, body: list[str], legend: list[tuple[str, str]], width: int, height: int) -> Markup:
    keys = "".join(f'<rect x="{PAD + 150 * i}" y="4" width="10" height="10" fill="{color}"/>'
                   f'<text x="{PAD + 14 + 150 * i}" y="13" font-size="11">{escape(name)}</text>'
                   for i, (name, color) in enumerate(legend))  # fmt: skip
    svg = (f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
           f'{keys}{"".join(body)}</svg>')  # fmt: skip
    return Markup(svg)


def _axis(labels: list[str], top: float, width: int, height: int, fmt) -> list[str]:
    base = height - PAD
    out = [f'<line x1="{PAD}" y1="{base}" x2="{width - 4}" y2="{base}" stroke="{GREY}"/>',
           f'<text x="2" y="{PAD + 8}" font-size="10" fill="{GREY}">{escape(fmt(top))}</text>']  # fmt: skip
    if labels:
        for i in sorted({0, len(labels) // 2, len(labels) - 1}):
            x = PAD + (i + 0.5) * (width - PAD - 4) / len(labels)
            out.append(f'<text x="{x:.1f}" y="{height - 8}" font-size="10" text-anchor="middle" fill="{GREY}">'
                       f'{escape(labels[i])}</text>')  # fmt: skip
    return out


def stacked_bars(title: str, labels: list[str], stacks: list[tuple[str, str, list[float]]],
                 width: int = WIDTH, height: int = HEIGHT, fmt=lambda v: f"{v:,.0f}") -> Markup:  # fmt: skip
    """One bar per label, each the sum of the stacks' values (name, colour, values)."""
    sums = [sum(s[2][i] for s in stacks) for i in range(len(labels))]
    top = max(sums, default=0) or 1
    step = (width - PAD - 4) / max(len(labels), 1)
    scale = (height - 2 * PAD) / top
    body = _axis(labels, top, width, height, fmt)
    for i, label in enumerate(labels):
        y = height - PAD
        for name, color, values in stacks:
            h = values[i] * scale
            if h > 0:
                y -= h
                body.append(f'<rect x="{PAD + i * step + 1:.1f}" y="{y:.1f}" width="{max(step - 2, 1):.1f}" '
                            f'height="{h:.1f}" fill="{color}"><title>{escape(label)}: {escape(name)} '
                            f'{escape(fmt(values[i]))}</title></rect>')  # fmt: skip
    return _frame(title, body, [(n, c) for n, c, _ in stacks], width, height)


def lines(title: str, labels: list[str], series: list[tuple[str, str, list[float]]],
          width: int = WIDTH, height: int = HEIGHT, fmt=lambda v: f"{v:,.2f}", top: float | None = None) -> Markup:  # fmt: skip
    """One polyline per series (name, colour, values) over the labels."""
    top = top or max((v for _, _, values in series for v in values), default=0) or 1
    step = (width - PAD - 4) / max(len(labels), 1)
    scale = (height - 2 * PAD) / top
    body = _axis(labels, top, width, height, fmt)
    for name, color, values in series:
        points = " ".join(f"{PAD + (i + 0.5) * step:.1f},{height - PAD - v * scale:.1f}" for i, v in enumerate(values))
        body.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2"><title>{escape(name)}'
                    f'</title></polyline>')  # fmt: skip
    return _frame(title, body, [(n, c) for n, c, _ in series], width, height)
