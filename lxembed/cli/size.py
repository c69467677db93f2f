"""lxembed size | diff: what takes the space in a build, what changed between two."""

from __future__ import annotations

import json
from pathlib import Path


def cmd_size(args) -> int:
    from ..reports.chart import size_chart
    from ..reports.contents import file_contents, load_manifest, locate
    from ..reports.size import human, size_report
    outdir, image, fmt = locate(Path(args.path), args.format)
    manifest = load_manifest(outdir)
    contents = file_contents(outdir) or {}
    entries = [(e["path"], e.get("origin", ""), e["size"], contents.get(e["path"]))
               for e in manifest["entries"] if e["type"] == "file"]
    image_bytes = image.stat().st_size if image else sum(e[2] for e in entries)
    report = size_report(entries, str(image or outdir), image_bytes, fmt)
    if args.svg:
        Path(args.svg).write_text(size_chart(report, args.top))
    if args.json:
        print(json.dumps(report.as_dict(args.top), indent=1))
        return 0
    share = "share" if report.shares else "share*"
    print(f"{report.image}: {human(report.image_bytes)} ({report.image_bytes} bytes)")
    for title, groups in (("package", report.packages()), ("directory", report.directories())):
        print(f"\n{title:40} {'files':>6} {'apparent':>11} {share:>11}")
        for g in groups[:args.top]:
            print(f"{g.name[:40]:40} {g.files:>6} {human(g.apparent):>11} {human(g.share):>11}")
    print(f"\n{'file':56} {'apparent':>11} {share:>11}")
    for f in report.biggest_files(args.top):
        print(f"{f.path[:56]:56} {human(f.apparent):>11} {human(f.share):>11}")
    if not report.shares:
        print("\n* no contents in this output (build dir, tar, cpio, squashfs or ext4 too): "
              "shares follow apparent sizes")
    if args.svg:
        print(f"\nchart: {args.svg}")
    return 0


def _manifest_of(path: Path) -> dict:
    from ..reports.contents import load_manifest, locate
    outdir, _, _ = locate(path)
    return load_manifest(outdir)


def cmd_diff(args) -> int:
    from ..reports.diff import diff_manifests
    from ..reports.size import human
    result = diff_manifests(_manifest_of(Path(args.a)), _manifest_of(Path(args.b)))
    if args.json:
        print(json.dumps(result.as_dict(), indent=1))
        return 0
    data = result.as_dict()
    counts = ", ".join(f"{n} {k}" for k, n in data["counts"].items() if n)
    print(f"files: {human(data['before_bytes'])} -> {human(data['after_bytes'])} "
          f"({data['delta']:+d} bytes){': ' + counts if counts else ', no changes'}")
    if data["packages"]:
        print(f"\n{'package':40} {'delta':>12}  files")
        for p in data["packages"][:args.top]:
            what = ", ".join(f"{p[k]} {k}" for k in ("added", "removed", "grown", "shrunk",
                                                      "changed") if p[k])
            print(f"{p['package'][:40]:40} {p['delta']:>+12d}  {what}")
        print(f"\n{'file':56} {'kind':8} {'delta':>12}")
        for c in result.changes[:args.top]:
            print(f"{c.path[:56]:56} {c.kind:8} {c.delta:>+12d}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("size", help="what takes the space in a built image, by package, "
                              "directory and file")
    p.add_argument("path", help="a build's output directory, or an image in one")
    p.add_argument("--format", help="which image of the output to account for (default: "
                   "squashfs, ubi, jffs2, ext4, cpio.zst... whichever is there first)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--svg", metavar="FILE", help="also write a chart (sorted bars) as SVG")
    p.add_argument("--top", type=int, default=15, help="rows per table (default 15)")
    p.set_defaults(func=cmd_size)
    p = subparsers.add_parser("diff", help="files added, removed, grown and shrunk between two "
                              "builds (output directories, images or manifests)")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--json", action="store_true", help="print the difference as JSON")
    p.add_argument("--top", type=int, default=20, help="rows per table (default 20)")
    p.set_defaults(func=cmd_diff)

