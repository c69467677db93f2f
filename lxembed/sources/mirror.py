"""Find the Debian mirror in the host's apt configuration (deb822 and one-line formats)."""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from typing import List, Optional

from ..errors import UserError

DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple
    components: tuple
    signed_by: str = ""
    origin: str = ""  # the file it came from


def _parse_one_line(path: str, text: str) -> List[AptSource]:
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        options = {}
        m = re.match(r"deb\s+\[([^\]]*)\]\s+(.*)", line)
        if m:
            for opt in m.group(1).split():
                key, _, value = opt.partition("=")
                options[key.lower()] = value
            rest = m.group(2).split()
        else:
            rest = line.split()[1:]
        if len(rest) < 2:
            continue
        out.append(AptSource(rest[0].rstrip("/"), (rest[1],), tuple(rest[2:]),
                             options.get("signed-by", ""), path))
    return out


def _parse_deb822(path: str, text: str) -> List[AptSource]:
    out = []
    for stanza in re.split(r"\n\s*\n", text):
        fields, key = {}, None
        for line in stanza.splitlines():
            if line.startswith("#"):
                continue
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
                continue
            if ":" in line:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes") == "no":
            continue
        for uri in fields.get("uris", "").split():
            out.append(AptSource(uri.rstrip("/"), tuple(fields.get("suites", "").split()),
                                 tuple(fields.get("components", "").split()),
                                 fields.get("signed-by", ""), path))
    return out


def host_sources(etc: str = "/etc/apt") -> List[AptSource]:
    sources = []
    files = [os.path.join(etc, "sources.list")] + sorted(
        glob.glob(os.path.join(etc, "sources.list.d", "*.list")))
    for path in files:
        if os.path.isfile(path):
            sources += _parse_one_line(path, open(path, encoding="utf-8", errors="replace").read())
    for path in sorted(glob.glob(os.path.join(etc, "sources.list.d", "*.sources"))):
        sources += _parse_deb822(path, open(path, encoding="utf-8", errors="replace").read())
    return sources


def _is_debian(src: AptSource) -> bool:
    return "debian-archive-keyring" in src.signed_by or bool(
        re.search(r"/debian(-security)?$", src.uri))


@dataclass(frozen=True)
class Mirrors:
    main: str
    security: Optional[str]


def find_mirrors(suite: str, override: Optional[str] = None, etc: str = "/etc/apt") -> Mirrors:
    """The archive for `suite` (and its security archive) from --mirror or the host's sources.

    LXEMBED_MIRROR overrides the main archive, LXEMBED_SECURITY_MIRROR the security one
    ("none" leaves it out).
    """
    override = override or os.environ.get("LXEMBED_MIRROR")
    sources = [s for s in host_sources(etc) if _is_debian(s)]
    security = next((s.uri for s in sources if f"{suite}-security" in s.suites), None)
    if override:
        security = os.environ.get("LXEMBED_SECURITY_MIRROR", security)
        return Mirrors(override.rstrip("/"), None if security == "none" else security)
    main = next((s.uri for s in sources if suite in s.suites), None)
    if main is None:  # a host on another release: any Debian archive of its sources will do
        main = next((s.uri for s in sources if not s.uri.endswith("-security")), None)
    if main is None:
        raise UserError(f"no Debian mirror for {suite} in {etc}/sources.list*",
                        hint="give one with --mirror URL or LXEMBED_MIRROR")
    if security is None:
        security = next((s.uri for s in sources if s.uri.endswith("-security")), None)
    security = os.environ.get("LXEMBED_SECURITY_MIRROR", security)
    return Mirrors(main, None if security == "none" else security)
