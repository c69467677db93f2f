"""One description of every board and recipe key: type, default, allowed values and help.

Parsing, validation, defaults, `lxembed show` and docs/config.md all come from these tables;
adding a key is one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from ..errors import UserError
from .toml_lines import key_line


@dataclass(frozen=True)
class Setting:
    key: str
    kind: str  # str int float bool list dict table tables raw
    default: Any = None
    help: str = ""
    choices: Tuple[str, ...] = ()
    fields: Tuple[Setting, ...] = ()  # for table / tables


_PY_TYPES = {"str": str, "int": int, "float": (int, float), "bool": bool, "list": list,
             "dict": dict, "table": dict, "tables": list}
_TYPE_NAMES = {"str": "a string", "int": "an integer", "float": "a number",
               "bool": "true or false", "list": "a list",
               "dict": "a table", "table": "a table", "tables": "an array of tables"}


def validate(data: Dict[str, Any], settings, path: Path, text: str, table: str = "",
             index: int = 0) -> Dict[str, Any]:
    """Check `data` against `settings`; returns a dict with every key, defaults filled in."""
    known = {s.key: s for s in settings}
    where = f"[{table}] " if table else ""
    for key in data:
        if key not in known:
            line = key_line(text, table, key, index)
            raise UserError(f"{path}:{line}: unknown key {where}{key!r} "
                            f"(known: {', '.join(sorted(known))})")
    out = {}
    for s in settings:
        if s.key not in data:
            out[s.key] = _copy_default(s)
            continue
        value = data[s.key]
        sub = f"{table}.{s.key}" if table else s.key
        def err(msg: str, s: Setting = s) -> UserError:
            line = key_line(text, table, s.key, index)
            return UserError(f"{path}:{line}: {where}{s.key}: {msg}")
        if s.kind == "raw":
            out[s.key] = value
            continue
        ok = isinstance(value, _PY_TYPES[s.kind]) and not (
            s.kind in ("int", "float") and isinstance(value, bool))
        if not ok:
            raise err(f"expected {_TYPE_NAMES[s.kind]}, got {type(value).__name__}")
        if s.kind == "list" and not all(isinstance(v, (str, int)) for v in value):
            raise err("expected a list of strings")
        if s.choices and value not in s.choices:
            raise err(f"{value!r} is not one of {', '.join(s.choices)}")
        if s.kind == "table" and s.fields:
            value = validate(value, s.fields, path, text, sub)
        elif s.kind == "tables":
            items = []
            for i, item in enumerate(value):
                if not isinstance(item, dict):
                    raise err("expected an array of tables ([[...]])")
                items.append(validate(item, s.fields, path, text, sub, i) if s.fields else item)
            value = items
        out[s.key] = value
    return out


def _copy_default(s: Setting) -> Any:
    if s.kind == "table" and s.fields and s.default is None:
        return None
    if isinstance(s.default, (list, dict)):
        return type(s.default)(s.default)
    return s.default


QEMU_FIELDS = (
    Setting("machine", "str", None, "qemu -M value (default: the architecture's)"),
    Setting("cpu", "str", None, "qemu -cpu value (default: the architecture's)"),
    Setting("memory", "int", 256, "guest RAM in MiB"),
    Setting("smp", "int", 1, "guest CPUs"),
    Setting("console", "str", None, "kernel console device (default: the architecture's)"),
    Setting("kernel_package", "str", None, "Debian kernel package (default: the architecture's)"),
    Setting("kernel_arch", "str", None, "Debian arch of the kernel (armel boots the armhf one)"),
    Setting("modules", "list", [], "kernel modules every image for this board loads"),
    Setting("append", "str", "", "extra kernel command line"),
    Setting("nic", "str", None, "qemu NIC model (default: the architecture's)"),
    Setting("extra_args", "list", [], "extra qemu arguments"),
)

BOARD_SETTINGS = (
    Setting("description", "str", "", "one line about the board"),
    Setting("arch", "str", None, "Debian architecture of the userland",
            choices=("amd64", "i386", "arm64", "armhf", "armel", "mipsel", "mips64el")),
    Setting("suite", "str", "bookworm", "Debian suite the board is pinned to"),
    Setting("soc", "str", "", "SoC or machine name, for real hardware"),
    Setting("qemu", "table", None, "qemu-system profile; absent for real hardware",
            fields=QEMU_FIELDS),
)

USER_FIELDS = (
    Setting("name", "str", None, "login name"),
    Setting("uid", "int", None, "user id"),
    Setting("gid", "int", None, "group id (default: uid)"),
    Setting("home", "str", None, "home directory (default: /home/NAME)"),
    Setting("shell", "str", "/bin/sh", "login shell"),
    Setting("groups", "list", [], "supplementary groups"),
)

CHECK_FIELDS = (
    Setting("name", "str", None, "check name"),
    Setting("command", "str", None, "shell command run in the guest; exit status 0 passes"),
    Setting("expect", "str", "", "a regular expression the output must match"),
    Setting("user", "bool", True, "also run under qemu-user (no kernel)"),
)

SERVICE_FIELDS = (
    Setting("name", "str", None, "service name"),
    Setting("command", "list", None, "argv"),
    Setting("type", "str", "simple", "how it runs", choices=("oneshot", "simple", "respawn")),
    Setting("after", "list", [], "services that must start (oneshot: finish) first"),
    Setting("environment", "dict", {}, "extra environment"),
    Setting("workdir", "str", "/", "working directory"),
    Setting("user", "str", "root", "user name or uid"),
    Setting("stop_timeout", "float", 5.0, "seconds between SIGTERM and SIGKILL at shutdown"),
)

INTERFACE_FIELDS = (
    Setting("name", "str", None, "interface name"),
    Setting("dhcp", "bool", False, "configure through busybox udhcpc"),
    Setting("ipv4", "list", [], "static IPv4 addresses with prefix (10.0.0.2/24)"),
    Setting("gateway4", "str", None, "IPv4 default gateway"),
    Setting("ipv6", "list", [], "static IPv6 addresses with prefix"),
    Setting("gateway6", "str", None, "IPv6 default gateway"),
    Setting("vlan", "int", None, "make NAME as a VLAN on `link` with this id"),
    Setting("link", "str", None, "parent interface of a VLAN"),
)

NETWORK_FIELDS = (
    Setting("interfaces", "tables", [], "device network interfaces", fields=INTERFACE_FIELDS),
)

from .container_schema import CONTAINER_FIELDS  # noqa: E402  (it needs Setting, above)

RECIPE_SETTINGS = (
    Setting("description", "str", "", "one line about the image"),
    Setting("base", "str", None, "recipe this one extends (lists are appended, values replaced)"),
    Setting("packages", "list", [], "Debian packages installed whole (with their dependencies)"),
    Setting("debs", "list", [], "local .deb files installed whole (paths relative to the recipe)"),
    Setting("pick", "list", [], "files taken from `pick_packages` with their exact ELF closure"),
    Setting("pick_packages", "list", [], "packages that `pick` takes files from"),
    Setting("data", "list", [], "data paths copied along with picked files"),
    Setting("files", "dict", {}, "extra files: path = content"),
    Setting("overlays", "list", [], "trees under overlays/NAME laid over the rootfs"),
    Setting("hostname", "str", "lxembed", "the system's host name"),
    Setting("init", "str", "busybox", "PID 1", choices=("busybox", "python")),
    Setting("exclude", "list", ["/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*",
                                "/usr/share/locale/*", "/usr/share/lintian/*",
                                "/usr/share/bug/*", "/usr/share/initramfs-tools/*"],
            "glob patterns removed from the image"),
    Setting("users", "tables", [], "users besides root", fields=USER_FIELDS),
    Setting("modules", "list", [], "kernel modules the image loads at boot"),
    Setting("network", "table", None, "device networking", fields=NETWORK_FIELDS),
    Setting("services", "tables", [], "services started by the Python init", fields=SERVICE_FIELDS),
    Setting("checks", "tables", [], "extra checks `lxembed test` runs", fields=CHECK_FIELDS),
    Setting("container", "table", None, "containers: docs/containers.md", fields=CONTAINER_FIELDS),
)


def describe(settings, indent: str = "") -> str:
    """Markdown reference generated from a settings table."""
    lines = []
    for s in settings:
        extra = f" One of: {', '.join(s.choices)}." if s.choices else ""
        default = "" if s.default in (None, [], {}, "") else f" Default: `{s.default!r}`."
        lines.append(f"{indent}- `{s.key}` ({s.kind}): {s.help}.{extra}{default}")
        if s.fields:
            lines.append(describe(s.fields, indent + "  "))
    return "\n".join(lines)


def required(data: Optional[Dict[str, Any]], keys, path: Path, text: str, table: str) -> None:
    for key in keys:
        if data.get(key) is None:
            line = key_line(text, table.split(".")[0] if "." in table else table, "", 0)
            raise UserError(f"{path}:{line}: [{table}] needs {key!r}")
