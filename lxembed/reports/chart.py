"""A size chart a person can look at: sorted horizontal bars with labels, as plain SVG."""

from __future__ import annotations

from typing import List, Sequence
from xml.sax.saxutils import escape

from .size import Group, SizeReport, human

WIDTH, BAR_AREA, LABEL, ROW = 960, 520, 300, 22
COLOURS = ("#3b6ea5", "#5f9e6e")


def _panel(title: str, groups: Sequence[Group], y: int, colour: str, scale: float,
           out: List[str]) -> int:
    out.append(f'<text x="10" y="{y + 16}" font-size="16" font-weight="bold">'
               f'{escape(title)}</text>')
    y += 28
    for g in groups:
        width = max(1.0, g.share * scale)
        out.append(f'<text x="{LABEL - 8}" y="{y + 15}" text-anchor="end">'
                   f'{escape(g.name[:44])}</text>')
        out.append(f'<rect x="{LABEL}" y="{y + 3}" width="{width:.1f}" height="{ROW - 6}" '
                   f'fill="{colour}"><title>{escape(g.name)}: {g.files} files, '
                   f'{g.apparent} bytes apparent, {g.share:.0f} bytes of the image</title></rect>')
        files = f"{g.files} file{'s' * (g.files != 1)}"
        out.append(f'<text x="{LABEL + width + 6:.1f}" y="{y + 15}">{human(g.share)} '
                   f'<tspan fill="#777">({human(g.apparent)} apparent, {files})</tspan></text>')
        y += ROW
    return y + 12


def size_chart(report: SizeReport, top: int = 20) -> str:
    """Two panels, packages and directories, each bar a share of the image."""
    packages, dirs = report.packages()[:top], report.directories()[:top]
    biggest = max([g.share for g in packages + dirs] + [1.0])
    scale = (BAR_AREA - 140) / biggest
    height = 70 + (len(packages) + len(dirs)) * ROW + 90
    what = "share of the image" if report.shares else "apparent size (contents not available)"
    body: List[str] = [
        f'<text x="10" y="24" font-size="18" font-weight="bold">{escape(report.image)}: '
        f'{human(report.image_bytes)}</text>',
        f'<text x="10" y="44" fill="#555">bars: each one\'s {what}</text>']
    y = _panel("by package", packages, 56, COLOURS[0], scale, body)
    _panel("by directory", dirs, y, COLOURS[1], scale, body)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
            f'font-family="sans-serif" font-size="13">\n'
            f'<rect width="100%" height="100%" fill="white"/>\n' + "\n".join(body) + "\n</svg>\n")
