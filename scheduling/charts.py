"""Small server-side SVG charts for the dashboard: no JavaScript, no CDN."""

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

COLORS = {
    "success": "#3a8a3a",
    "failure": "#ba2121",
    "timeout": "#d9822b",
    "lost": "#7d3c98",
    "missed": "#999999",
    "skipped": "#c8b400",
    "cancelled": "#5b7fa3",
    "terminated": "#2f4f6f",
}


def _svg(width: int, height: int, body: str, title: str) -> SafeString:
    # Safe: every value below is a number or passed through escape().
    return mark_safe(
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" class="chart"><title>{escape(title)}</title>{body}</svg>'
    )


def horizontal_bars(items: list[tuple[str, float]], *, title: str, unit: str = "s") -> SafeString:
    """One bar per item, longest first as given."""
    if not items:
        return mark_safe("")
    width, row, label_w = 640, 22, 220
    top = max(value for _, value in items) or 1
    body = []
    for index, (label, value) in enumerate(items):
        y = index * row
        length = (width - label_w - 80) * value / top
        shown = f"{value:.2f}{unit}" if unit else f"{value:g}"  # no unit: a count
        body.append(
            f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end" font-size="12">{escape(label[:32])}</text>'
            f'<rect x="{label_w}" y="{y + 4}" width="{length:.1f}" height="{row - 8}" fill="#417690">'
            f"<title>{escape(label)}: {shown}</title></rect>"
            f'<text x="{label_w + length + 4:.1f}" y="{y + 15}" font-size="11">{shown}</text>'
        )
    return _svg(width, row * len(items) + 4, "".join(body), title)


def stacked_columns(days: list[str], series: dict[str, list[int]], *, title: str) -> SafeString:
    """A column per day, stacked by outcome, with a legend."""
    if not days:
        return mark_safe("")
    width, height, bottom, left = 640, 220, 30, 40
    col = (width - left) / len(days)
    totals = [sum(values[i] for values in series.values()) for i in range(len(days))]
    top = max(totals) or 1
    body = [f'<text x="4" y="12" font-size="11">{top}</text>']
    for i, day in enumerate(days):
        x = left + i * col
        y = height - bottom
        for status, values in series.items():
            h = (height - bottom - 20) * values[i] / top
            if h <= 0:
                continue
            y -= h
            body.append(
                f'<rect x="{x + 2:.1f}" y="{y:.1f}" width="{col - 4:.1f}" height="{h:.1f}" '
                f'fill="{COLORS.get(status, "#417690")}"><title>{escape(day)} {escape(status)}: '
                f"{values[i]}</title></rect>"
            )
        body.append(
            f'<text x="{x + col / 2:.1f}" y="{height - bottom + 14}" font-size="10" '
            f'text-anchor="middle">{escape(day[5:])}</text>'
        )
    for i, status in enumerate(series):
        body.append(
            f'<rect x="{left + i * 90}" y="{height - 10}" width="10" height="10" '
            f'fill="{COLORS.get(status, "#417690")}"/><text x="{left + i * 90 + 14}" '
            f'y="{height - 1}" font-size="11">{escape(status)}</text>'
        )
    return _svg(width, height + 4, "".join(body), title)


def line(points: list[tuple[str, float, str]], *, title: str, unit: str = "s") -> SafeString:
    """Durations over time: a line through the runs, failed runs marked red."""
    if not points:
        return mark_safe("")
    width, height, left, bottom = 640, 200, 50, 20
    top = max(value for _, value, _ in points) or 1
    step = (width - left - 10) / max(len(points) - 1, 1)

    def xy(i: int, value: float) -> tuple[float, float]:
        return left + i * step, 10 + (height - bottom - 10) * (1 - value / top)

    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(i, v) for i, (_, v, _) in enumerate(points)))
    body = [
        f'<text x="4" y="14" font-size="11">{top:.2f}{unit}</text>',
        f'<text x="4" y="{height - bottom}" font-size="11">0</text>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width}" y2="{height - bottom}" stroke="#ccc"/>',
        f'<polyline points="{path}" fill="none" stroke="#417690" stroke-width="1.5"/>',
    ]
    for i, (label, value, status) in enumerate(points):
        x, y = xy(i, value)
        body.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{COLORS.get(status, "#417690")}">'
            f"<title>{escape(label)}: {value:.3f}{unit} ({escape(status)})</title></circle>"
        )
    body.append(
        f'<text x="{left}" y="{height - 4}" font-size="10">{escape(points[0][0])}</text>'
        f'<text x="{width - 4}" y="{height - 4}" font-size="10" text-anchor="end">'
        f"{escape(points[-1][0])}</text>"
    )
    return _svg(width, height, "".join(body), title)


def heat_map(grid: list[list[int]], *, title: str, unit: str = "runs") -> SafeString:
    """Counts by hour of the day (rows) and minute of the hour (columns), darker for more."""
    if not any(any(row) for row in grid):
        return mark_safe("")
    cell_w, cell_h, left, top_margin = 10, 7, 30, 14
    top = max(max(row) for row in grid)
    body = [
        f'<text x="{left + minute * cell_w}" y="10" font-size="10">:{minute:02d}</text>'
        for minute in (0, 15, 30, 45)
    ]
    for hour, row in enumerate(grid):
        y = top_margin + hour * cell_h
        if hour % 3 == 0:
            body.append(f'<text x="0" y="{y + cell_h}" font-size="10">{hour:02d}h</text>')
        for minute, count in enumerate(row):
            if not count:
                continue
            body.append(
                f'<rect x="{left + minute * cell_w}" y="{y}" width="{cell_w - 1}" '
                f'height="{cell_h - 1}" fill="#417690" fill-opacity="{0.15 + 0.85 * count / top:.2f}">'
                f"<title>{hour:02d}:{minute:02d}: {count} {escape(unit)}</title></rect>"
            )
    return _svg(left + 60 * cell_w, top_margin + 24 * cell_h + 2, "".join(body), title)
