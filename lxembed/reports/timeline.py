"""A boot's timeline: the init's events (docs/init.md) as spans, as JSON and as an SVG Gantt chart.

The events are what the Python init writes to /run/lxembed/timeline: CLOCK_MONOTONIC seconds
(0 is the kernel's start), a name (kernel, kernel:initramfs, init, setup:STEP, each service and
service container) and an event (start, ready, exit, kill, stop, restart, done, healthy...).
Spans are derived: the kernel until it runs the init, CPython's start until the init's code
runs, each set-up step, and each run of a service, split where it became ready.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence
from xml.sax.saxutils import escape

# phase -> colour: what a person reading the chart tells apart
COLOURS = {"kernel": "#8c8c8c", "python": "#b07cc6", "setup": "#3b6ea5",
           "starting": "#e0a33a", "running": "#5f9e6e", "stopping": "#c0504d"}
WIDTH, LABEL, ROW, TOP = 960, 170, 20, 46


@dataclass
class Span:
    name: str
    phase: str  # a key of COLOURS
    start: float
    end: float


def parse_events(text: str) -> List[Dict]:
    """The init's event lines (anything else, such as a shell's noise, is skipped)."""
    events = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if isinstance(e, dict) and {"t", "name", "event"} <= set(e):
            events.append(e)
    return sorted(events, key=lambda e: e["t"])


def spans(events: Sequence[Dict]) -> List[Span]:
    """Spans in the order their rows first appear."""
    out: List[Span] = []
    end = max((e["t"] for e in events), default=0.0)
    first = {}
    for e in events:
        first.setdefault((e["name"], e["event"]), e["t"])
    kernel = first.get(("kernel", "done"))
    init = first.get(("init", "start"))
    if kernel is not None:
        out.append(Span("kernel", "kernel", 0.0, kernel))
        if ("kernel:initramfs", "start") in first and ("kernel:initramfs", "done") in first:
            out.append(Span("initramfs unpack", "kernel", first[("kernel:initramfs", "start")],
                            first[("kernel:initramfs", "done")]))
        if init is not None:
            out.append(Span("CPython start", "python", kernel, init))
    open_setup: Dict[str, float] = {}
    runs: Dict[str, List] = {}  # service -> [start, ready or None, stop or None]
    order: List[str] = []
    for e in events:
        name, what, t = e["name"], e["event"], e["t"]
        if name.startswith("setup:"):
            if what == "start":
                open_setup[name] = t
            elif what == "done" and name in open_setup:
                out.append(Span(name, "setup", open_setup.pop(name), t))
            continue
        if name in ("init", "kernel", "kernel:initramfs"):
            continue
        if name not in order:
            order.append(name)
        run = runs.get(name)
        if what in ("start", "restart"):
            if run:
                out.extend(_run_spans(name, run, t))
            runs[name] = [t, None, None]
        elif run and what == "ready" and run[1] is None:
            run[1] = t
        elif run and what in ("stop", "kill") and run[2] is None:
            run[2] = t
        elif run and what == "exit":
            out.extend(_run_spans(name, run, t))
            runs.pop(name)
    for name, run in runs.items():
        out.extend(_run_spans(name, run, end))
    rank = {name: i for i, name in enumerate(order)}
    return sorted(out, key=lambda s: (s.phase not in ("kernel", "python", "setup"),
                                      rank.get(s.name, -1), s.start))


def _run_spans(name: str, run: List, end: float) -> List[Span]:
    start, ready, stop = run
    out = []
    until_ready = ready if ready is not None else (stop if stop is not None else end)
    out.append(Span(name, "starting", start, until_ready))
    if ready is not None:
        out.append(Span(name, "running", ready, stop if stop is not None else end))
    if stop is not None:
        out.append(Span(name, "stopping", stop, end))
    return [s for s in out if s.end >= s.start]


def milestones(events: Sequence[Dict]) -> Dict[str, float]:
    """When the init was ready (every service settled) and first healthy, and when each service
    was first ready."""
    out: Dict[str, float] = {}
    for e in events:
        key = e["name"] if e["name"] != "init" else f"init {e['event']}"
        if e["event"] in ("ready", "healthy") and key not in out:
            out[key] = e["t"]
    return out


def timeline_json(events: Sequence[Dict], title: str) -> str:
    return json.dumps({"title": title, "events": list(events),
                       "spans": [asdict(s) for s in spans(events)],
                       "milestones": milestones(events)}, indent=1) + "\n"


def timeline_svg(events: Sequence[Dict], title: str, until: Optional[float] = None) -> str:
    """A Gantt chart of the boot up to `until` (default: the device first healthy, else the
    last event); later events (restarts during checks) are listed under it."""
    marks = milestones(events)
    end = until or marks.get("init healthy") or marks.get("init ready") or max(
        (e["t"] for e in events), default=1.0)
    end = max(end, 0.1)
    shown = [s for s in spans(events) if s.start <= end]
    rows: List[str] = []
    for s in shown:
        if s.name not in rows:
            rows.append(s.name)
    later = [e for e in events if e["t"] > end and e["name"] != "init"
             and e["event"] in ("kill", "exit", "restart", "ready", "unhealthy")]
    area = WIDTH - LABEL - 30
    scale = area / (end * 1.04)
    height = TOP + len(rows) * ROW + 60 + 16 * len(later)
    body = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
            f'font-family="sans-serif" font-size="12">',
            '<rect width="100%" height="100%" fill="white"/>',
            f'<text x="10" y="20" font-size="15" font-weight="bold">{escape(title)}</text>']
    y0 = TOP
    step = _tick(end)
    t = 0.0
    while t <= end * 1.04:
        x = LABEL + t * scale
        body.append(f'<line x1="{x:.1f}" y1="{y0 - 6}" x2="{x:.1f}" '
                    f'y2="{y0 + len(rows) * ROW}" stroke="#e4e4e4"/>')
        body.append(f'<text x="{x:.1f}" y="{y0 - 10}" text-anchor="middle" fill="#555">'
                    f'{t:g} s</text>')
        t = round(t + step, 6)
    for i, name in enumerate(rows):
        y = y0 + i * ROW
        body.append(f'<text x="{LABEL - 8}" y="{y + 14}" text-anchor="end">{escape(name)}</text>')
    for s in shown:
        y = y0 + rows.index(s.name) * ROW
        x, w = LABEL + s.start * scale, max(1.0, (min(s.end, end) - s.start) * scale)
        body.append(f'<rect x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{ROW - 6}" '
                    f'fill="{COLOURS[s.phase]}"><title>{escape(s.name)}: {s.phase} '
                    f'{s.start:.3f}–{s.end:.3f} s ({s.end - s.start:.3f} s)</title></rect>')
        if s.phase in ("starting", "setup", "python", "kernel") and w > 34:
            body.append(f'<text x="{x + 3:.1f}" y="{y + 14}" fill="white" font-size="10">'
                        f'{s.end - s.start:.2f}</text>')
    for key, colour in (("init ready", "#333"), ("init healthy", "#1a7f37")):
        if key in marks and marks[key] <= end:
            x = LABEL + marks[key] * scale
            body.append(f'<line x1="{x:.1f}" y1="{y0 - 4}" x2="{x:.1f}" '
                        f'y2="{y0 + len(rows) * ROW}" stroke="{colour}" stroke-dasharray="4 3"/>')
    y = y0 + len(rows) * ROW + 22
    legend = " ".join(f'<tspan fill="{c}">■</tspan> {p}' for p, c in COLOURS.items())
    healthy = marks.get("init healthy")
    summary = f"healthy at {healthy:.2f} s" if healthy is not None else "never healthy"
    body.append(f'<text x="10" y="{y}">{legend}   — {summary} (dashed: ready, healthy)</text>')
    for e in later:
        y += 16
        body.append(f'<text x="10" y="{y}" fill="#555">later: {e["t"]:.2f} s '
                    f'{escape(e["name"])} {escape(e["event"])}</text>')
    body.append("</svg>")
    return "\n".join(body) + "\n"


def _tick(end: float) -> float:
    for step in (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60):
        if end / step <= 14:
            return step
    return 120.0
