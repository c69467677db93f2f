"""Runners: start built images and containers (qemu-system, qemu-user, LXC, crun).

Shared here: the checks `lxembed test` runs. A check is a shell command run inside the image;
it passes when its exit status is 0 and its output matches `expect`. The standard checks live
in qemu/checks.toml, recipes add their own.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..config import Plan
from ..config.loader import project_dirs
from ..config.schema import CHECK_FIELDS
from ..config.settings import Setting, validate
from ..config.toml_lines import parse
from ..errors import UserError
from ..log import info

# The standard checks also say where they make sense: `system` (booted kernel) and `user`.
STANDARD_CHECK_FIELDS = CHECK_FIELDS + (
    Setting("system", "bool", True, "run when the image boots under qemu-system"),
    Setting("description", "str", "", "what the check proves"),
    Setting("interface", "str", None, "only if the recipe configures this network interface"),
    Setting("dhcp", "bool", False, "with `interface`: only if it is configured by DHCP"),
)

READY = re.compile(r"lxembed(-init)?: ready")


@dataclass(frozen=True)
class Check:
    name: str
    command: str
    expect: str = ""
    origin: str = ""  # qemu/checks.toml or the recipe file

    def judge(self, status: int, output: str) -> bool:
        return status == 0 and (not self.expect or re.search(self.expect, output, re.M) is not None)


@dataclass
class CheckResult:
    name: str
    ok: bool
    output: str
    status: int = 0
    seconds: float = 0.0
    error: str = ""  # why it could not run (timeout...), empty if it ran

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def run_check(check: Check, run: Callable[[str], Tuple[Optional[int], str]], timeout: float,
              on_timeout: str) -> CheckResult:
    """Run one check through `run(command) -> (status or None on timeout, output)`."""
    t0 = time.monotonic()
    status, output = run(check.command)
    result = CheckResult(check.name, False, output, -1 if status is None else status,
                         round(time.monotonic() - t0, 3))
    if status is None:
        result.error = f"timed out after {timeout:.0f} s ({on_timeout})"
    else:
        result.ok = check.judge(status, output)
    return result


def standard_checks_file() -> Path:
    for base in project_dirs():
        path = base / "qemu" / "checks.toml"
        if path.is_file():
            return path
    raise UserError("qemu/checks.toml is missing (the standard checks)")


def _expand(text: str, plan: Plan) -> str:
    """{uname}: the arch table's `uname -m` answers as a regex alternation."""
    return text.replace("{uname}", "|".join(re.escape(u) for u in plan.arch.uname))


def _applies(item: Dict[str, Any], plan: Plan, mode: str = "system") -> bool:
    """A check about a network interface applies only to recipes that configure it, and not
    under qemu-system on a board whose machine has no NIC qemu can give it."""
    if not item["interface"]:
        return True
    if mode == "system" and (plan.board.qemu or {}).get("nic") == "none":
        return False
    network = plan.recipe.settings.get("network") or {}
    for iface in network.get("interfaces") or []:
        if iface.get("name") == item["interface"]:
            return bool(iface.get("dhcp")) or not item["dhcp"]
    return False


def load_checks(plan: Plan, mode: str) -> List[Check]:
    """Standard checks, then the recipe's, for `mode` "system" or "user"."""
    path = standard_checks_file()
    data, text = parse(path)
    items = data.get("checks", [])
    if not isinstance(items, list):
        raise UserError(f"{path}: expected [[checks]] tables")
    checks = []
    if mode == "system" and (plan.board.qemu or {}).get("nic") == "none":
        info(f"{plan.board.name}: its qemu machine has no network device ([qemu] nic = "
             "\"none\"): the network checks are skipped")
    for i, item in enumerate(items):
        item = validate(item, STANDARD_CHECK_FIELDS, path, text, "checks", i)
        if item["name"] is None or item["command"] is None:
            raise UserError(f"{path}: every [[checks]] needs name and command")
        if item[mode] and _applies(item, plan, mode):
            checks.append(
                Check(
                    item["name"],
                    _expand(item["command"], plan),
                    _expand(item["expect"], plan),
                    str(path),
                )
            )
    for item in plan.recipe.settings.get("checks") or []:
        if mode == "user" and not item.get("user", True):
            continue
        checks.append(
            Check(item["name"], item["command"], item.get("expect") or "", str(plan.recipe.path))
        )
    names = [c.name for c in checks]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UserError(f"check names must be unique; repeated: {', '.join(dupes)}")
    return checks


@dataclass
class TestReport:
    """The outcome of `lxembed test`, as --json prints it."""

    board: str
    recipe: str
    mode: str  # "system" (qemu-system) or "user" (qemu-user)
    accel: str  # "kvm", "tcg", or the qemu-user binary
    boot_seconds: Optional[float] = None  # host wall time from qemu start to the ready marker
    guest_uptime: Optional[float] = None  # /proc/uptime in the guest at ready
    checks: List[CheckResult] = field(default_factory=list)
    error: str = ""  # why the run failed outside the checks (timeout, no power-off...)
    console_log: str = ""
    kernel: Optional[Dict[str, Any]] = None  # package and version that booted (the pin)
    seconds: float = 0.0
    timeline: Optional[str] = None  # the init's boot events, when asked for (--timeline)

    @property
    def ok(self) -> bool:
        return not self.error and all(c.ok for c in self.checks)

    def as_dict(self) -> Dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        return out
