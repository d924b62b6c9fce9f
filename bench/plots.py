"""Small, dependency-free SVG charts for bench/run (Python 3 standard library only).

One figure is a row of panels; a panel has an x and a y axis (linear, logarithmic or
categorical), series of points (markers, optional lines, optional error bars, optional
value labels), and dashed reference lines (targets). The output is a plain SVG 1.1
document that any browser, GitHub and most editors render.
"""

import math
from xml.sax.saxutils import escape

# Colour-blind-safe palette (Okabe & Ito).
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
GRID = "#e4e4e4"
AXIS = "#444444"
TEXT = "#222222"
FONT = "font-family='DejaVu Sans, Helvetica, Arial, sans-serif'"


def fmt_num(v):
    """A short, human label for a tick or a value."""
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 10_000:
        return f"{v / 1e3:.3g}k"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}".rstrip("0").rstrip(".")
    if a >= 1:
        return f"{v:.2f}".rstrip("0").rstrip(".")
    return f"{v:.3g}"


def linear_ticks(lo, hi, n=5):
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    start = math.floor(lo / step) * step
    ticks = []
    t = start
    while t <= hi + step * 1e-9:
        if t >= lo - step * 1e-9:
            ticks.append(round(t, 10))
        t += step
    return ticks


def log_ticks(lo, hi):
    """Decades, plus 2 and 5 when the range spans few decades."""
    a = math.floor(math.log10(lo))
    b = math.ceil(math.log10(hi))
    mults = (1, 2, 5) if b - a <= 4 else (1,)
    out = []
    for e in range(a, b + 1):
        for m in mults:
            v = m * 10 ** e
            if lo * 0.999 <= v <= hi * 1.001:
                out.append(v)
    return out


class Axis:
    """An axis: `kind` is 'lin', 'log' or 'cat' (categories are equally spaced)."""

    def __init__(self, label, kind="lin", lo=None, hi=None, categories=None, zero=True):
        self.label = label
        self.kind = kind
        self.lo = lo
        self.hi = hi
        self.categories = categories or []
        self.zero = zero

    def fit(self, values):
        values = [v for v in values if v is not None and (self.kind != "log" or v > 0)]
        if self.kind == "cat":
            return
        if not values:
            values = [1.0]
        lo = min(values) if self.lo is None else self.lo
        hi = max(values) if self.hi is None else self.hi
        if self.kind == "log":
            if self.lo is None:
                lo = 10 ** math.floor(math.log10(lo) + 1e-9)
            if self.hi is None:
                hi = 10 ** math.ceil(math.log10(hi) - 1e-9)
            if hi <= lo:
                hi = lo * 10
        else:
            if self.zero and self.lo is None:
                lo = min(0.0, lo)
            if self.hi is None:
                hi = hi + (hi - lo) * 0.12 if hi > lo else hi + 1
                ticks = linear_ticks(lo, hi)
                hi = max(hi, ticks[-1])
        self.lo, self.hi = lo, hi

    def frac(self, v):
        """Position of `v` along the axis, 0..1."""
        if self.kind == "cat":
            n = len(self.categories)
            return (v + 0.5) / n
        if self.kind == "log":
            v = max(v, self.lo)
            return (math.log10(v) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        return (v - self.lo) / (self.hi - self.lo)

    def ticks(self):
        if self.kind == "cat":
            return [(i, str(c)) for i, c in enumerate(self.categories)]
        if self.kind == "log":
            return [(t, fmt_num(t)) for t in log_ticks(self.lo, self.hi)]
        return [(t, fmt_num(t)) for t in linear_ticks(self.lo, self.hi)]


class Series:
    """Points (x, y); `err` is a list of (lo, hi) per point or None."""

    def __init__(self, name, points, color=None, marker="circle", line=True, err=None,
                 labels=False, label_fmt=None, dash=None, width=2.0, size=4.5):
        self.name = name
        self.points = points
        self.color = color
        self.marker = marker
        self.line = line
        self.err = err
        self.labels = labels
        self.label_fmt = label_fmt or fmt_num
        self.dash = dash
        self.width = width
        self.size = size


class Panel:
    def __init__(self, title, x, y, series=(), hlines=(), vlines=(), note=None, legend="top-left",
                 horizontal_bands=None):
        self.title = title
        self.x = x
        self.y = y
        self.series = list(series)
        self.hlines = list(hlines)  # (y, label, color)
        self.vlines = list(vlines)  # (x, label, color)
        self.note = note
        self.legend = legend
        self.horizontal_bands = horizontal_bands  # list of (y_cat, lo, hi, color)


def marker_svg(kind, cx, cy, r, color):
    if kind == "circle":
        return f"<circle cx='{cx:.1f}' cy='{cy:.1f}' r='{r:.1f}' fill='{color}'/>"
    if kind == "ring":
        return f"<circle cx='{cx:.1f}' cy='{cy:.1f}' r='{r:.1f}' fill='white' stroke='{color}' stroke-width='1.8'/>"
    if kind == "square":
        return f"<rect x='{cx - r:.1f}' y='{cy - r:.1f}' width='{2 * r:.1f}' height='{2 * r:.1f}' fill='{color}'/>"
    if kind == "diamond":
        r *= 1.3
        return (f"<polygon points='{cx:.1f},{cy - r:.1f} {cx + r:.1f},{cy:.1f} {cx:.1f},{cy + r:.1f} "
                f"{cx - r:.1f},{cy:.1f}' fill='{color}'/>")
    if kind == "triangle":
        r *= 1.25
        return (f"<polygon points='{cx:.1f},{cy - r:.1f} {cx + r:.1f},{cy + r * 0.8:.1f} "
                f"{cx - r:.1f},{cy + r * 0.8:.1f}' fill='{color}'/>")
    if kind == "cross":
        return (f"<path d='M{cx - r:.1f},{cy - r:.1f} L{cx + r:.1f},{cy + r:.1f} M{cx - r:.1f},{cy + r:.1f} "
                f"L{cx + r:.1f},{cy - r:.1f}' stroke='{color}' stroke-width='2'/>")
    if kind == "bar":
        return f"<rect x='{cx - 1.5:.1f}' y='{cy - r * 1.6:.1f}' width='3' height='{r * 3.2:.1f}' fill='{color}'/>"
    return ""


def text(x, y, s, size=12, anchor="start", color=TEXT, weight="normal", rotate=None, baseline=None):
    extra = f" transform='rotate({rotate} {x:.1f} {y:.1f})'" if rotate is not None else ""
    bl = f" dominant-baseline='{baseline}'" if baseline else ""
    return (f"<text x='{x:.1f}' y='{y:.1f}' font-size='{size}' text-anchor='{anchor}' fill='{color}' "
            f"font-weight='{weight}' {FONT}{bl}{extra}>{escape(str(s))}</text>")


def render_panel(p, ox, oy, w, h):
    """Draw panel `p` with its plot area at (ox, oy) of size w x h."""
    out = []
    for i, s in enumerate(p.series):
        if s.color is None:
            s.color = PALETTE[i % len(PALETTE)]
    xs, ys = [], []
    for s in p.series:
        for k, (x, y) in enumerate(s.points):
            xs.append(x)
            ys.append(y)
            if s.err and s.err[k]:
                ys.extend(s.err[k])
    ys.extend(v for v, _, _ in p.hlines)
    xs.extend(v for v, _, _ in p.vlines)
    p.x.fit(xs)
    p.y.fit(ys)

    def X(v):
        return ox + p.x.frac(v) * w

    def Y(v):
        return oy + h - p.y.frac(v) * h

    out.append(text(ox, oy - 12, p.title, size=14, weight="bold"))
    out.append(f"<rect x='{ox}' y='{oy}' width='{w}' height='{h}' fill='white' stroke='{AXIS}' stroke-width='1'/>")
    # Grid and ticks.
    for v, lab in p.y.ticks():
        yy = Y(v)
        out.append(f"<line x1='{ox}' y1='{yy:.1f}' x2='{ox + w}' y2='{yy:.1f}' stroke='{GRID}'/>")
        out.append(text(ox - 6, yy + 4, lab, size=11, anchor="end"))
    for v, lab in p.x.ticks():
        xx = X(v)
        if p.x.kind != "cat":
            out.append(f"<line x1='{xx:.1f}' y1='{oy}' x2='{xx:.1f}' y2='{oy + h}' stroke='{GRID}'/>")
        out.append(text(xx, oy + h + 16, lab, size=11, anchor="middle"))
    out.append(text(ox + w / 2, oy + h + 36, p.x.label, size=12, anchor="middle"))
    out.append(text(ox - 48, oy + h / 2, p.y.label, size=12, anchor="middle", rotate=-90))
    # Reference lines.
    for v, lab, color in p.hlines:
        if p.y.kind == "log" and v <= 0:
            continue
        yy = Y(v)
        out.append(f"<line x1='{ox}' y1='{yy:.1f}' x2='{ox + w}' y2='{yy:.1f}' stroke='{color}' "
                   f"stroke-width='1.5' stroke-dasharray='6 4'/>")
        out.append(text(ox + w - 4, yy - 5, lab, size=11, anchor="end", color=color))
    for v, lab, color in p.vlines:
        xx = X(v)
        out.append(f"<line x1='{xx:.1f}' y1='{oy}' x2='{xx:.1f}' y2='{oy + h}' stroke='{color}' "
                   f"stroke-width='1.5' stroke-dasharray='6 4'/>")
        out.append(text(xx + 4, oy + 14, lab, size=11, color=color))
    # Series.
    for s in p.series:
        pts = [(X(x), Y(y)) for x, y in s.points if y is not None and (p.y.kind != "log" or y > 0)]
        if s.err:
            for (x, _), e in zip(s.points, s.err):
                if not e:
                    continue
                lo, hi = e
                xx = X(x)
                out.append(f"<line x1='{xx:.1f}' y1='{Y(lo):.1f}' x2='{xx:.1f}' y2='{Y(hi):.1f}' "
                           f"stroke='{s.color}' stroke-width='1.5' opacity='0.7'/>")
                for yv in (lo, hi):
                    out.append(f"<line x1='{xx - 4:.1f}' y1='{Y(yv):.1f}' x2='{xx + 4:.1f}' y2='{Y(yv):.1f}' "
                               f"stroke='{s.color}' stroke-width='1.5' opacity='0.7'/>")
        if s.line and len(pts) > 1:
            d = " ".join(f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y) in enumerate(pts))
            dash = f" stroke-dasharray='{s.dash}'" if s.dash else ""
            out.append(f"<path d='{d}' fill='none' stroke='{s.color}' stroke-width='{s.width}'{dash}/>")
        for x, y in pts:
            out.append(marker_svg(s.marker, x, y, s.size, s.color))
        if s.labels:
            for (x, y), (xv, yv) in zip(pts, [(a, b) for a, b in s.points if b is not None]):
                out.append(text(x + 6, y - 7, s.label_fmt(yv), size=10, color=s.color))
    # Legend.
    named = [s for s in p.series if s.name]
    if named and p.legend:
        lx = ox + 10 if "left" in p.legend else ox + w - 190
        ly = oy + 12 if "top" in p.legend else oy + h - 10 - 17 * len(named)
        box_w = 180
        out.append(f"<rect x='{lx - 4}' y='{ly - 8}' width='{box_w}' height='{17 * len(named) + 4}' "
                   f"fill='white' fill-opacity='0.85' stroke='{GRID}'/>")
        for i, s in enumerate(named):
            yy = ly + 17 * i + 4
            if s.line:
                dash = f" stroke-dasharray='{s.dash}'" if s.dash else ""
                out.append(f"<line x1='{lx}' y1='{yy}' x2='{lx + 20}' y2='{yy}' stroke='{s.color}' "
                           f"stroke-width='{s.width}'{dash}/>")
            out.append(marker_svg(s.marker, lx + 10, yy, s.size, s.color))
            out.append(text(lx + 28, yy + 4, s.name, size=11))
    if p.note:
        out.append(text(ox, oy + h + 54, p.note, size=11, color="#666666"))
    return out


def figure(title, panels, subtitle=None, panel_w=430, panel_h=300, path=None):
    """Lay `panels` out in one row; return the SVG text (and write it to `path`)."""
    left, gap, top, bottom = 78, 96, 78 if subtitle else 60, 70
    width = left + len(panels) * panel_w + (len(panels) - 1) * gap + 30
    height = top + panel_h + bottom
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
           f"viewBox='0 0 {width} {height}'>",
           f"<rect width='{width}' height='{height}' fill='white'/>",
           text(left - 60, 24, title, size=17, weight="bold")]
    if subtitle:
        out.append(text(left - 60, 44, subtitle, size=12, color="#555555"))
    for i, p in enumerate(panels):
        out.extend(render_panel(p, left + i * (panel_w + gap), top, panel_w, panel_h))
    out.append("</svg>")
    svg = "\n".join(out) + "\n"
    if path:
        with open(path, "w") as f:
            f.write(svg)
    return svg


def percentile_strips(title, rows, path, subtitle=None, refs=(), xlabel="delivery latency (ms, log scale)"):
    """One row per label: markers for p50, p90, p99, p99.9 and max on a log axis, a bar
    from p50 to p99.9 behind them, and the p50 / p99 values written beside the row.

    rows: list of (label, {"p50":ms, "p90":ms, "p99":ms, "p999":ms, "max":ms}).
    refs: (ms, label, colour) vertical reference lines.
    """
    keys = [("p50", "p50", "circle", PALETTE[0]), ("p90", "p90", "ring", PALETTE[0]),
            ("p99", "p99", "diamond", PALETTE[1]), ("p999", "p99.9", "triangle", PALETTE[3]),
            ("max", "max", "cross", "#777777")]
    label_w, row_h, right = 250, 34, 190
    plot_w = 560
    top = 82 if subtitle else 64
    height = top + row_h * len(rows) + 70
    width = label_w + plot_w + right
    vals = [v for _, r in rows for k, *_ in keys for v in [r.get(k)] if v and v > 0]
    vals += [v for v, _, _ in refs]
    ax = Axis(xlabel, "log")
    ax.fit(vals or [1])

    def X(v):
        return label_w + ax.frac(max(v, ax.lo)) * plot_w

    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
           f"viewBox='0 0 {width} {height}'>",
           f"<rect width='{width}' height='{height}' fill='white'/>",
           text(16, 24, title, size=17, weight="bold")]
    if subtitle:
        out.append(text(16, 44, subtitle, size=12, color="#555555"))
    # Legend.
    lx = label_w
    for _, name, m, c in keys:
        out.append(marker_svg(m, lx + 6, top - 14, 4.5, c))
        out.append(text(lx + 15, top - 10, name, size=11))
        lx += 62
    y0, y1 = top, top + row_h * len(rows)
    for i in range(0, len(rows), 2):
        out.append(f"<rect x='0' y='{top + row_h * i}' width='{width}' height='{row_h}' fill='#f6f8fb'/>")
    for v, lab in ax.ticks():
        xx = X(v)
        out.append(f"<line x1='{xx:.1f}' y1='{y0}' x2='{xx:.1f}' y2='{y1}' stroke='{GRID}'/>")
        out.append(text(xx, y1 + 16, lab, size=11, anchor="middle"))
    out.append(text(label_w + plot_w / 2, y1 + 38, ax.label, size=12, anchor="middle"))
    for v, lab, c in refs:
        xx = X(v)
        out.append(f"<line x1='{xx:.1f}' y1='{y0}' x2='{xx:.1f}' y2='{y1}' stroke='{c}' "
                   f"stroke-width='1.5' stroke-dasharray='6 4'/>")
        out.append(text(xx + 3, y1 + 54, lab, size=10, color=c))
    for i, (label, r) in enumerate(rows):
        yy = top + row_h * i + row_h / 2
        out.append(text(label_w - 10, yy + 4, label, size=12, anchor="end"))
        if r.get("p50") and r.get("p999"):
            out.append(f"<line x1='{X(r['p50']):.1f}' y1='{yy:.1f}' x2='{X(r['p999']):.1f}' y2='{yy:.1f}' "
                       f"stroke='#9ab' stroke-width='6' stroke-linecap='round' opacity='0.6'/>")
        for k, _, m, c in keys:
            v = r.get(k)
            if v and v > 0:
                out.append(marker_svg(m, X(v), yy, 4.5, c))
        if r.get("p50") is not None:
            out.append(text(label_w + plot_w + 10, yy + 4,
                            f"p50 {fmt_num(r['p50'])} · p99 {fmt_num(r.get('p99') or 0)} ms", size=11))
    out.append(f"<rect x='{label_w}' y='{y0}' width='{plot_w}' height='{y1 - y0}' fill='none' stroke='{AXIS}'/>")
    out.append("</svg>")
    svg = "\n".join(out) + "\n"
    with open(path, "w") as f:
        f.write(svg)
    return svg
