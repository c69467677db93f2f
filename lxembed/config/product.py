"""Where boards, recipes, overlays and the standard checks come from, first match wins:

1. the user's product directory: the current directory's boards/, recipes/, overlays/ (and
   qemu/checks.toml), or the directory its lxembed.toml names (`lxembed -C DIR` changes the
   current directory first, as `git -C` and `make -C` do);
2. each LXEMBED_PATH entry;
3. the shipped ones: lxembed/_data/ in an installed package (setup.py copies them there), or
   the top of a checkout, where they are kept.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from ..errors import UserError
from .settings import Setting, validate
from .toml_lines import key_line, parse

PRODUCT_FILE = "lxembed.toml"
KINDS = ("boards", "recipes", "overlays")
PRODUCT_SETTINGS = (
    Setting("dir", "str", ".", "the directory holding the product's boards/, recipes/ and "
            "overlays/, relative to lxembed.toml"),
)

_PACKAGE = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class SearchDir:
    path: Path
    origin: str  # "product", "LXEMBED_PATH" or "shipped": what `lxembed list` shows


def shipped_dir() -> Path:
    """An installed package carries its data in lxembed/_data; a checkout (or an editable
    install of one) has no such directory and reads the repository's top level."""
    data = _PACKAGE / "_data"
    return data if data.is_dir() else _PACKAGE.parent


def product_dir(cwd: Optional[Path] = None) -> Optional[Path]:
    """The current directory's product, if it has one: what its lxembed.toml names, else
    itself when it has a boards/, recipes/ or overlays/ directory."""
    cwd = cwd or Path.cwd()
    conf = cwd / PRODUCT_FILE
    if conf.is_file():
        data, text = parse(conf)
        settings = validate(data, PRODUCT_SETTINGS, conf, text)
        path = (cwd / settings["dir"]).resolve()
        if not path.is_dir():
            raise UserError(f"{conf}:{key_line(text, '', 'dir')}: dir {settings['dir']!r}: "
                            f"{path} is not a directory")
        return path
    if any((cwd / kind).is_dir() for kind in KINDS):
        return cwd.resolve()
    return None


def search_dirs() -> List[SearchDir]:
    """The directories searched, in order. A directory is searched once, under its most
    telling name: a checkout's top level is "shipped" also when it is the current directory."""
    shipped = shipped_dir().resolve()
    dirs = []
    product = product_dir()
    if product is not None:
        dirs.append(SearchDir(product, "product"))
    dirs += [SearchDir(Path(p).resolve(), "LXEMBED_PATH")
             for p in os.environ.get("LXEMBED_PATH", "").split(":") if p]
    out: List[SearchDir] = []
    for d in dirs:
        if d.path != shipped and d.path not in [o.path for o in out]:
            out.append(d)
    return out + [SearchDir(shipped, "shipped")]


def project_dirs() -> List[Path]:
    """Where boards/, recipes/, overlays/ and qemu/checks.toml are looked for, in order."""
    return [d.path for d in search_dirs()]


def find_all(kind: str, name: str) -> List[Path]:
    """Every `kind/name.toml` in search order: the first is the one used, the others it hides."""
    return [p for p in (base / kind / f"{name}.toml" for base in project_dirs()) if p.is_file()]


def find_file(kind: str, name: str, after: Optional[Path] = None) -> Path:
    """A board or recipe by name (or path). `after`: the file naming it as its base, when the
    name is its own: `base = "busybox"` in a product's busybox.toml extends the next busybox
    in the search order (the shipped one), as C's #include_next does."""
    if name.endswith(".toml") or "/" in name:
        path = Path(name)
        if path.is_file():
            return path
        raise UserError(f"{kind[:-1]} file {name} does not exist")
    found = find_all(kind, name)
    resolved = [p.resolve() for p in found]
    if after is not None and after.resolve() in resolved:
        found = found[resolved.index(after.resolve()) + 1:]
    if found:
        return found[0]
    known = ", ".join(names(kind)) or "none"
    raise UserError(f"unknown {kind[:-1]} {name!r} (known: {known})")


def names(kind: str) -> List[str]:
    found = set()
    for base in project_dirs():
        found.update(p.stem for p in (base / kind).glob("*.toml"))
    return sorted(found)


def find_overlay(name: str) -> Path:
    for base in project_dirs():
        path = base / "overlays" / name
        if path.is_dir():
            return path
    raise UserError(f"unknown overlay {name!r} (no overlays/{name}/ directory)")


@dataclass
class Found:
    """A board, recipe or overlay as `lxembed list` shows it: the one used, and what it hides."""
    name: str
    path: Path
    source: SearchDir
    hides: List[str] = field(default_factory=list)  # origins of same-named ones further on


def catalog(kind: str) -> List[Found]:
    """Every board, recipe ("boards", "recipes": files) or overlay ("overlays": directories)."""
    found: Dict[str, Found] = {}
    for d in search_dirs():
        top = d.path / kind
        if not top.is_dir():
            continue
        entries = [p for p in top.iterdir() if p.is_dir()] if kind == "overlays" else \
            list(top.glob("*.toml"))
        for path in sorted(entries):
            name = path.name if kind == "overlays" else path.stem
            if name in found:
                found[name].hides.append(d.origin)
            else:
                found[name] = Found(name, path, d)
    return [found[n] for n in sorted(found)]
