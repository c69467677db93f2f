"""lxembed cache: what lxembed's caches hold (unpacked packages, downloaded .debs), and
cleaning them."""

from __future__ import annotations

import json


def cmd_cache(args) -> int:
    from ..reports.size import human
    from ..sources import unpacked
    from ..sources.apt import clean_download_caches, download_caches
    if args.action == "clean":
        entries, size = unpacked.clean()
        print(f"unpacked packages: removed {entries} entries ({human(size)})")
        if args.debs:
            files, size = clean_download_caches()
            print(f"downloaded packages: removed {files} .debs ({human(size)})")
        return 0
    report = {"unpacked": unpacked.usage(), "downloads": download_caches()}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    u = report["unpacked"]
    limit = human(u["limit"]) if u["limit"] else "off"
    print(f"unpacked packages  {u['entries']:>5} entries {human(u['bytes']):>10}  "
          f"(limit {limit}, LXEMBED_UNPACKED_CACHE_MAX)  {u['path']}")
    for d in report["downloads"]:
        print(f"downloaded .debs   {d['debs']:>5} files   {human(d['bytes']):>10}  {d['path']}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("cache", help="show what lxembed's package caches hold, or clean "
                              "them (builds fill them again)")
    p.add_argument("action", nargs="?", choices=("show", "clean"), default="show",
                   help="show (default), or clean: remove the unpacked packages")
    p.add_argument("--debs", action="store_true",
                   help="with clean: remove the downloaded .debs too (they are downloaded "
                   "again when a build needs them)")
    p.add_argument("--json", action="store_true", help="print what show says as JSON")
    p.set_defaults(func=cmd_cache)
