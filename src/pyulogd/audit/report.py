"""``pyulogd-audit report --html FILE``: one self-contained page (no network access needed to
view it, nothing loaded from anywhere): the time range and hosts, totals (accepted, dropped,
rate-limited, lost), drops and accepts over time, top sources and dropped destinations,
per router/port/project/namespace tables, the loss records and the latest records.

Charts are SVG drawn here (a stacked bar chart, horizontal bar charts): no charting library
to vendor, nothing to execute. Every text from the store is HTML-escaped. The page carries
one small script that only measures the charts once drawn (``data-chart-sizes`` on
``<body>``), which the test in a real browser reads.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from typing import Any

from pyulogd.audit.query import Filters, endpoint, ip_text, proto_name, time_text

COLORS = {"ACCEPT": "#2e7d32", "DROP": "#c62828", "REJECT": "#ef6c00", "OTHER": "#6a1b9a", "-": "#78909c"}
ORDER = ("ACCEPT", "DROP", "REJECT", "OTHER", "-")
LEGEND = {"-": "no verdict"}


def esc(v: Any) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def bar_chart(title: str, buckets: Sequence[dict[str, Any]], width: int = 900, height: int = 260) -> str:
    """Stacked bars of records per action per time bucket."""
    left, bottom, top, right = 56, 44, 28, 12
    w, h = width - left - right, height - top - bottom
    totals = [sum(v for k, v in b.items() if k != "t") for b in buckets]
    peak = max(totals, default=0) or 1
    out = [f'<svg class="chart" role="img" aria-label="{esc(title)}" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
           f'<text x="{left}" y="18" class="ct">{esc(title)}</text>']
    for i in range(5):  # grid and scale
        y = top + h - h * i / 4
        out.append(f'<line x1="{left}" x2="{left + w}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="ax">{round(peak * i / 4)}</text>')
    n = max(len(buckets), 1)
    slot = w / n
    bw = max(1.0, slot * 0.8)
    for i, b in enumerate(buckets):
        x = left + i * slot + (slot - bw) / 2
        y = top + h
        for action in ORDER:
            v = b.get(action, 0)
            if not v:
                continue
            bh = h * v / peak
            y -= bh
            out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bw:.1f}" height="{bh:.1f}" fill="{COLORS[action]}">'
                       f'<title>{esc(b["t"])} {esc(action)}: {v}</title></rect>')
        if n <= 12 or i % max(1, n // 8) == 0:
            label = str(b["t"])[5:16].replace("T", " ")
            out.append(f'<text x="{x + bw / 2:.1f}" y="{top + h + 16}" text-anchor="middle" class="ax">'
                       f'{esc(label)}</text>')
    lx = left
    for action in ORDER:
        if any(b.get(action) for b in buckets):
            out.append(f'<rect x="{lx}" y="{height - 14}" width="10" height="10" fill="{COLORS[action]}"/>'
                       f'<text x="{lx + 14}" y="{height - 5}" class="ax">{esc(LEGEND.get(action, action))}</text>')
            lx += 90
    if not buckets:
        out.append(f'<text x="{left + w / 2}" y="{top + h / 2}" text-anchor="middle" class="ax">no records</text>')
    out.append("</svg>")
    return "".join(out)


def hbar_chart(title: str, items: Sequence[tuple[str, int]], color: str, width: int = 440) -> str:
    """Horizontal bars (top talkers, top dropped destinations)."""
    row, top, label_w = 22, 30, 210
    height = top + row * max(len(items), 1) + 10
    peak = max((v for _, v in items), default=0) or 1
    out = [f'<svg class="chart" role="img" aria-label="{esc(title)}" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
           f'<text x="4" y="18" class="ct">{esc(title)}</text>']
    span = width - label_w - 60
    for i, (label, v) in enumerate(items):
        y = top + i * row
        bw = max(1.0, span * v / peak)
        out.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end" class="ax">{esc(label)}</text>'
                   f'<rect x="{label_w}" y="{y + 3}" width="{bw:.1f}" height="{row - 6}" fill="{color}">'
                   f'<title>{esc(label)}: {v}</title></rect>'
                   f'<text x="{label_w + bw + 4:.1f}" y="{y + 15}" class="ax">{v}</text>')
    if not items:
        out.append(f'<text x="{width / 2}" y="{top + 14}" text-anchor="middle" class="ax">none</text>')
    out.append("</svg>")
    return "".join(out)


def table(head: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    if not rows:
        return '<p class="none">none</p>'
    out = [f'<table class="{cls}"><thead><tr>' + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in r) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def per_table(rows: Sequence[dict[str, Any]], what: str) -> str:
    actions = [a for a in ORDER if any(a in r for r in rows)]
    return table([what, *actions, "total"],
                 [[r["key"], *[r.get(a, 0) for a in actions], sum(r.get(a, 0) for a in actions)] for r in rows])


CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1b1b1b;background:#fafafa}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.meta{color:#555;margin-bottom:16px}.kpis{display:flex;gap:12px;flex-wrap:wrap}
.kpi{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px 16px;min-width:120px}
.kpi b{display:block;font-size:22px}.row{display:flex;gap:24px;flex-wrap:wrap}
svg.chart{background:#fff;border:1px solid #ddd;border-radius:6px}
.ct{font-weight:600;font-size:13px}.ax{font-size:11px;fill:#444}.grid{stroke:#eee}
table{border-collapse:collapse;background:#fff;font-size:12px}td,th{border:1px solid #ddd;padding:3px 8px;
text-align:left}th{background:#f0f0f0}.none{color:#777}
"""

MEASURE = """
window.addEventListener("load", function () {
  var sizes = [];
  document.querySelectorAll("svg.chart").forEach(function (e) {
    var r = e.getBoundingClientRect();
    sizes.push([e.getAttribute("aria-label"), Math.round(r.width), Math.round(r.height),
                e.querySelectorAll("rect").length]);
  });
  document.body.setAttribute("data-chart-sizes", JSON.stringify(sizes));
});
"""


def render(summary: dict[str, Any], recent: Sequence[dict[str, Any]], source: str, filters: Filters,
           now: float) -> str:
    s = summary
    by = s["by_action"]
    dropped = by.get("DROP", 0) + by.get("REJECT", 0)
    lost = sum(int(x["count"]) for x in s["losses"])
    since = time_text(filters.since) or time_text(s["first"]) or "-"
    until = time_text(filters.until) or time_text(s["last"]) or "-"
    given = ", ".join(filters.given()) or "none"
    kpis = [("records", s["records"]), ("accepted", by.get("ACCEPT", 0)), ("dropped or rejected", dropped),
            ("rate-limited (not logged one by one)", s["suppressed"]["records"]), ("lost (loss records)", lost)]
    over = [{**b, "t": time_text(b["t"] * 1_000_000)} for b in s["over_time"]]
    talkers = [(ip_text(t["src_ip"]) or "-", t["records"]) for t in s["top_talkers"]]
    dests = [(f"{endpoint(t['dst_ip'], t['dport'])} {proto_name(t['proto'])}", t["records"])
             for t in s["top_dropped_destinations"]]
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; style-src \'unsafe-inline\'; '
        'script-src \'unsafe-inline\'; img-src data:">',
        "<title>pyulogd audit report</title>", f"<style>{CSS}</style>", f"<script>{MEASURE}</script></head><body>",
        "<h1>pyulogd audit report</h1>",
        f'<div class="meta">from <b>{esc(since)}</b> to <b>{esc(until)}</b> &middot; hosts: '
        f'<b>{esc(", ".join(s["hosts"]) or "-")}</b> &middot; store: {esc(source)} &middot; filters: {esc(given)}'
        f" &middot; made {esc(time_text(int(now * 1e6)))}</div>",
        '<div class="kpis">' + "".join(f'<div class="kpi"><b>{esc(v)}</b>{esc(k)}</div>' for k, v in kpis) + "</div>",
        "<h2>Drops and accepts over time</h2>",
        bar_chart(f"records per {s['bucket']} s, by verdict", over),
        '<div class="row"><div><h2>Top sources</h2>' + hbar_chart("records by source address", talkers, "#1565c0")
        + "</div><div><h2>Top dropped destinations</h2>"
        + hbar_chart("dropped or rejected records by destination", dests, "#c62828") + "</div></div>",
        "<h2>Per router</h2>", per_table(s["per_router"], "router"),
        "<h2>Per port</h2>", per_table(s["per_port"], "port"),
        "<h2>Per project</h2>", per_table(s["per_project"], "project"),
        "<h2>Per namespace</h2>", per_table(s["per_netns"], "namespace"),
        "<h2>Rate limiting</h2>",
        f"<p>{s['suppressed']['records']} records held back by rate limits, reported in "
        f"{s['suppressed']['summaries']} summary records.</p>",
        "<h2>Loss records</h2>",
        table(["time", "lost", "reason", "from", "to", "host"],
              [[time_text(x["ts"]), x["count"], x["reason"], time_text(x["start_ts"]), time_text(x["end_ts"]),
                x["host"]] for x in s["losses"]]),
        "<h2>Latest records</h2>",
        table(["time", "action", "proto", "source", "destination", "rule", "router", "port"],
              [[time_text(r.get("ts")), r.get("action"), proto_name(r.get("proto")),
                endpoint(r.get("src_ip"), r.get("sport")), endpoint(r.get("dst_ip"), r.get("dport")), r.get("rule"),
                r.get("router_id"), r.get("port_id")] for r in recent]),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def write_report(path: str, summary: dict[str, Any], recent: Sequence[dict[str, Any]], source: str,
                 filters: Filters, now: float) -> None:
    """Write the page (whole, then renamed into place: a reader never sees half a report)."""
    text = render(summary, recent, source, filters, now)
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
