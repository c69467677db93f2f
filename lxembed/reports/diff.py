"""What changed between two builds: files added, removed, grown and shrunk, by file and by
package, with totals; read from their manifests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List


@dataclass
class Change:
    path: str
    package: str
    before: int  # -1: absent
    after: int

    @property
    def kind(self) -> str:
        if self.before < 0:
            return "added"
        if self.after < 0:
            return "removed"
        return "grown" if self.after > self.before else "shrunk" if self.after < self.before \
            else "changed"

    @property
    def delta(self) -> int:
        return max(self.after, 0) - max(self.before, 0)


@dataclass
class ManifestDiff:
    changes: List[Change] = field(default_factory=list)
    before_total: int = 0
    after_total: int = 0

    def packages(self) -> List[dict]:
        out: Dict[str, dict] = {}
        for c in self.changes:
            p = out.setdefault(c.package, {"package": c.package, "delta": 0, "added": 0,
                                           "removed": 0, "grown": 0, "shrunk": 0, "changed": 0})
            p["delta"] += c.delta
            p[c.kind] += 1
        return sorted(out.values(), key=lambda p: (-abs(p["delta"]), p["package"]))

    def as_dict(self) -> dict:
        counts = {k: sum(c.kind == k for c in self.changes)
                  for k in ("added", "removed", "grown", "shrunk", "changed")}
        return {"before_bytes": self.before_total, "after_bytes": self.after_total,
                "delta": self.after_total - self.before_total, "counts": counts,
                "packages": self.packages(),
                "files": [{"path": c.path, "package": c.package, "kind": c.kind,
                           "before": max(c.before, 0), "after": max(c.after, 0),
                           "delta": c.delta} for c in self.changes]}


def _files(manifest: dict) -> Dict[str, dict]:
    return {e["path"]: e for e in manifest.get("entries", []) if e.get("type") == "file"}


def diff_manifests(before: dict, after: dict) -> ManifestDiff:
    a, b = _files(before), _files(after)
    out = ManifestDiff(before_total=sum(e["size"] for e in a.values()),
                       after_total=sum(e["size"] for e in b.values()))
    for path in sorted(set(a) | set(b)):
        old, new = a.get(path), b.get(path)
        if old is not None and new is not None and old.get("sha256") == new.get("sha256"):
            continue
        package = (new or old).get("origin", "") or "(lxembed)"
        out.changes.append(Change(path, package, old["size"] if old else -1,
                                  new["size"] if new else -1))
    out.changes.sort(key=lambda c: (-abs(c.delta), c.path))
    return out
