"""What `net up` made, recorded under the user's state dir so `down` removes exactly that.

The state of description NAME is `STATE/net/NAME.json`; dnsmasq's pid and lease files live in
`STATE/net/NAME/`. STATE is $LXEMBED_STATE, else $XDG_STATE_HOME/lxembed, else
~/.local/state/lxembed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List


def state_dir() -> Path:
    base = os.environ.get("LXEMBED_STATE") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "lxembed")
    return Path(base) / "net"


def state_file(name: str) -> Path:
    return state_dir() / f"{name}.json"


def run_dir(name: str) -> Path:
    """dnsmasq's pid and lease files for description NAME."""
    path = state_dir() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


class Journal:
    """Objects created or changed, in order; undone in reverse.

    Entries: netns NAME; link NAME (netns); address LINK (netns, address); master LINK
    (previous); up LINK (netns; was down); moved LINK (netns); sysctl PATH (previous); tables
    (tables); dnsmasq BRIDGE (pidfile).
    """

    def __init__(self, entries: List[Dict[str, Any]] = ()):
        self.entries: List[Dict[str, Any]] = list(entries)

    def add(self, kind: str, name: str, **extra: Any) -> None:
        self.entries.append({"kind": kind, "name": name, **extra})

    def find(self, kind: str, name: str) -> Dict[str, Any]:
        return next((e for e in self.entries if e["kind"] == kind and e["name"] == name), {})

    def drop(self, kind: str, name: str) -> None:
        self.entries = [e for e in self.entries if not (e["kind"] == kind and e["name"] == name)]


def load_state(name: str) -> Dict[str, Any]:
    path = state_file(name)
    if not path.exists():
        return {}
    return json.loads(path.read_text())


def save_state(name: str, state: Dict[str, Any]) -> None:
    path = state_file(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, path)


def forget_state(name: str) -> None:
    state_file(name).unlink(missing_ok=True)
    run = state_dir() / name
    if run.is_dir():
        for f in run.iterdir():
            f.unlink()
        run.rmdir()
