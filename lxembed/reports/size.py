"""What takes the space in an image: per file, package and directory, apparent bytes and each
one's share of the (compressed) image.

A file's share is estimated by compressing it alone (zstd, in 128 KiB chunks as a squashfs
block would be; whole 4 KiB blocks for an uncompressed filesystem) and scaling every estimate so
that they add up to the image's real size: the filesystem's own overhead is spread over the
files in proportion. Buildroot's size-stats reports apparent size only; on flash, the share of
the compressed image is the number that decides whether an image fits.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional

import zstandard

CHUNK = 128 * 1024


@dataclass
class FileSize:
    path: str
    package: str
    apparent: int
    share: float = 0.0  # bytes of the image this file accounts for


@dataclass
class Group:
    name: str
    files: int = 0
    apparent: int = 0
    share: float = 0.0

    def as_dict(self) -> dict:
        return {"name": self.name, "files": self.files, "apparent": self.apparent,
                "share": round(self.share)}


@dataclass
class SizeReport:
    image: str
    image_bytes: int
    files: List[FileSize] = field(default_factory=list)
    shares: bool = True  # False: contents were not available, shares are apparent sizes

    def by(self, key) -> List[Group]:
        groups: Dict[str, Group] = {}
        for f in self.files:
            g = groups.setdefault(key(f), Group(key(f)))
            g.files += 1
            g.apparent += f.apparent
            g.share += f.share
        return sorted(groups.values(), key=lambda g: (-g.share, g.name))

    def packages(self) -> List[Group]:
        return self.by(lambda f: f.package or "(lxembed)")

    def directories(self, depth: int = 3) -> List[Group]:
        def top(f: FileSize) -> str:
            parts = posixpath.dirname(f.path).split("/")[1:depth + 1]
            return "/" + "/".join(p for p in parts if p)
        return self.by(top)

    def biggest_files(self, n: int = 10) -> List[FileSize]:
        return sorted(self.files, key=lambda f: (-f.share, f.path))[:n]

    def as_dict(self, top: int = 0) -> dict:
        def cut(items):
            return items[:top] if top else items
        return {"image": self.image, "image_bytes": self.image_bytes,
                "estimated_shares": self.shares,
                "packages": [g.as_dict() for g in cut(self.packages())],
                "directories": [g.as_dict() for g in cut(self.directories())],
                "files": [{"path": f.path, "package": f.package, "apparent": f.apparent,
                           "share": round(f.share)} for f in cut(self.biggest_files(
                               len(self.files)))]}


def _estimate(data: bytes, compressed: bool, compressor) -> int:
    if not compressed:
        return -(-len(data) // 4096) * 4096
    return sum(len(compressor.compress(data[i:i + CHUNK])) for i in range(0, len(data), CHUNK))


def size_report(entries: Iterable[tuple], image: str, image_bytes: int, fmt: str) -> SizeReport:
    """`entries`: (path, package, apparent size, content or None) of every regular file."""
    compressed = fmt.split(".")[0] not in ("ext4", "dir") and fmt not in ("tar", "cpio")
    compressor = zstandard.ZstdCompressor(level=9)
    report = SizeReport(image, image_bytes)
    estimates = []
    for path, package, apparent, data in entries:
        report.files.append(FileSize(path, package, apparent))
        if data is None:
            report.shares = False
            estimates.append(apparent)
        else:
            estimates.append(_estimate(data, compressed, compressor))
    total = sum(estimates) or 1
    for f, est in zip(report.files, estimates):
        f.share = est * image_bytes / total
    return report


def tree_entries(tree) -> Iterable[tuple]:
    """(path, package, size, content) of a RootfsTree's regular files."""
    for path, e in tree:
        if e.type == "file":
            yield path, e.origin, len(e.data), e.data


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def budget_message(name: str, size: int, budget: int, report: Optional[SizeReport]) -> str:
    """The over-budget error: the overage, then the ten biggest packages and files."""
    over = size - budget
    lines = [f"{name} is over its {human(budget)} budget by {over} byte{'s' * (over != 1)} "
             f"({size} > {budget})"]
    if report is not None:
        lines.append("  biggest packages (share of the image, apparent size):")
        lines += [f"    {g.name:32} {human(g.share):>10} {human(g.apparent):>10}"
                  for g in report.packages()[:10]]
        lines.append("  biggest files:")
        lines += [f"    {f.path:48} {human(f.share):>10}  {f.package}"
                  for f in report.biggest_files(10)]
    return "\n".join(lines)
