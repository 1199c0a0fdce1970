#!/usr/bin/env python3
"""Turns a site.sh results folder (<proxy>.json from qlik-users) into summary.md and
sessions.svg: open QIX sessions per node over time, one panel per proxy, the change marked.
Plain SVG written by hand, so the plot needs nothing beyond Python's standard library."""

import json
import pathlib
import sys

COLORS = ["#e8590c", "#c92a2a", "#2b8a3e", "#1c7ed6"]


def load(folder):
    reports = {}
    for name in ["haproxy", "qlik-lb"]:
        path = folder / f"{name}.json"
        if path.exists():
            reports[name] = json.loads(path.read_text())
    return reports


def pct(x):
    return f"{100 * x:.1f} %"


def summary(reports):
    names = list(reports)
    s = {n: reports[n]["summary"] for n in names}
    cfg = next(iter(reports.values()))["config"]
    busy = next(iter(reports.values()))["busy_node"]
    sat = next(iter(reports.values()))["saturated_node"]
    lines = [
        f"{cfg['users']} users over {cfg['arrive_secs']:.0f} s, sessions of {cfg['session_secs']:.0f} s with "
        f"Evaluate every {cfg['evaluate_secs']:.0f} s; at {cfg['change_at']:.0f} s {busy} goes to 95 % CPU "
        f"and {sat} becomes saturated.",
        "",
        "| measure | " + " | ".join(names) + (" | qlik-lb / HAProxy |" if len(names) == 2 else ""),
        "|---|" + "---:|" * len(names) + ("---:|" if len(names) == 2 else ""),
    ]

    def row(label, values, ratio=None):
        line = f"| {label} | " + " | ".join(values) + " |"
        if len(names) == 2:
            line += f" {ratio or ''} |"
        lines.append(line)

    row("users who arrived after the change", [str(s[n]["users_after_change"]) for n in names])
    row(
        f"of them, started on {busy} or {sat}",
        [f"{s[n]['after_change_on_busy_or_saturated']} ({pct(s[n]['after_change_on_busy_or_saturated_share'])})" for n in names],
    )
    row("sessions broken", [str(s[n]["sessions_broken"]) for n in names])
    for key, label in [("qix_users_after_change", "users who arrived after the change"), ("qix_all", "every user")]:
        for q in ["p50_ms", "p99_ms"]:
            vals = [s[n][key][q] for n in names]
            ratio = f"{vals[1] / vals[0]:.2f}x" if len(names) == 2 and vals[0] > 0 else None
            row(f"QIX answer {q[:3]} ({label}), ms", [f"{v:.1f}" for v in vals], ratio)
    nodes = sorted(next(iter(s.values()))["open_sessions_at_last_arrival"])
    for node in nodes:
        row(f"open sessions on {node} at the last arrival", [str(s[n]["open_sessions_at_last_arrival"].get(node, 0)) for n in names])
    return "\n".join(lines) + "\n"


def svg(reports):
    width, height, pad = 420, 240, 40
    panels = []
    for i, (name, rep) in enumerate(reports.items()):
        series = rep["series"]
        nodes = sorted(series[0]["open"]) if series else []
        t_max = max((p["t"] for p in series), default=1) or 1
        y_max = max((max(p["open"].values()) for p in series), default=1) or 1
        x0 = i * (width + 20)

        def x(t):
            return x0 + pad + (width - pad - 10) * t / t_max

        def y(v):
            return height - pad + -(height - 2 * pad) * v / y_max

        parts = [f'<text x="{x0 + width / 2}" y="18" text-anchor="middle" font-weight="bold">{name}</text>']
        parts.append(f'<line x1="{x(0)}" y1="{y(0)}" x2="{x(t_max)}" y2="{y(0)}" stroke="#888"/>')
        parts.append(f'<line x1="{x(0)}" y1="{y(0)}" x2="{x(0)}" y2="{y(y_max)}" stroke="#888"/>')
        parts.append(f'<text x="{x0 + 4}" y="{y(y_max) + 4}" font-size="10">{y_max}</text>')
        parts.append(f'<text x="{x(t_max)}" y="{y(0) + 14}" font-size="10" text-anchor="end">{t_max:.0f} s</text>')
        change = rep["config"]["change_at"]
        parts.append(f'<line x1="{x(change)}" y1="{y(0)}" x2="{x(change)}" y2="{y(y_max)}" stroke="#999" stroke-dasharray="4 3"/>')
        parts.append(f'<text x="{x(change) + 3}" y="{y(y_max) + 10}" font-size="10" fill="#666">change</text>')
        for j, node in enumerate(nodes):
            pts = " ".join(f"{x(p['t']):.1f},{y(p['open'].get(node, 0)):.1f}" for p in series)
            color = COLORS[j % len(COLORS)]
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{pts}"/>')
            label = node + (" (95 % CPU)" if node == rep["busy_node"] else " (saturated)" if node == rep["saturated_node"] else "")
            parts.append(f'<text x="{x0 + pad + 6}" y="{34 + 12 * j}" font-size="10" fill="{color}">{label}</text>')
        panels.append("\n".join(parts))
    total_w = len(reports) * (width + 20)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_w}" height="{height}" font-family="sans-serif" font-size="12">\n'
        f'<rect width="100%" height="100%" fill="white"/>\n' + "\n".join(panels) + "\n</svg>\n"
    )


def main():
    folder = pathlib.Path(sys.argv[1])
    reports = load(folder)
    if not reports:
        sys.exit(f"no <proxy>.json in {folder}")
    (folder / "summary.md").write_text(summary(reports))
    (folder / "sessions.svg").write_text(svg(reports))
    print((folder / "summary.md").read_text())


if __name__ == "__main__":
    main()
