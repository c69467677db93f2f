"""What `net up` made, recorded under the user's state dir so `down` removes exactly that.

The state of description NAME is `STATE/net/NAME.json`, the journal of a run not yet recorded
there `STATE/net/NAME.journal` (journal.py) and the lock of its runs `STATE/net/NAME.lock`;
dnsmasq's pid and lease files live in `STATE/net/NAME/`. STATE is $LXEMBED_STATE, else
$XDG_STATE_HOME/lxembed, else ~/.local/state/lxembed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict


def state_dir() -> Path:
    base = os.environ.get("LXEMBED_STATE") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "lxembed")
    return Path(base) / "net"


def state_file(name: str) -> Path:
    return state_dir() / f"{name}.json"


def journal_file(name: str) -> Path:
    """The write-ahead journal of a run not yet committed to the state file (see journal.py)."""
    return state_dir() / f"{name}.journal"


def lock_file(name: str) -> Path:
    return state_dir() / f"{name}.lock"


def run_dir(name: str) -> Path:
    """dnsmasq's pid and lease files for description NAME."""
    path = state_dir() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_state(name: str) -> Dict[str, Any]:
    path = state_file(name)
    if not path.exists():
        return {}
    return json.loads(path.read_text())


def save_state(name: str, state: Dict[str, Any]) -> None:
    """Replace the state file whole, durably: the journal is deleted only after this returns,
    so at any instant one of the two names every object (both, briefly: the same ones)."""
    path = state_file(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as fh:
        fh.write(json.dumps(state, indent=2) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a created, renamed or deleted name in `path` survive a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def forget_state(name: str) -> None:
    """After `down` removed everything. The state file goes last: a `down` killed part-way
    here leaves it, and the next `down` (finding nothing left to remove) finishes this."""
    run = state_dir() / name
    if run.is_dir():
        for f in run.iterdir():
            f.unlink()
        run.rmdir()
    journal_file(name).unlink(missing_ok=True)
    state_file(name).unlink(missing_ok=True)
