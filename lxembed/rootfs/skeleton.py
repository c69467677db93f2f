"""The /etc skeleton, standard directories and the minimal /dev of every image."""

from __future__ import annotations

from typing import Any, Dict, List

from ..errors import UserError
from ..tree import CHAR, DIR, Entry, RootfsTree

# (path, major, minor, mode): what a console and a shell need before devtmpfs is mounted.
DEVICE_NODES = (
    ("/dev/console", 5, 1, 0o600), ("/dev/null", 1, 3, 0o666), ("/dev/zero", 1, 5, 0o666),
    ("/dev/random", 1, 8, 0o666), ("/dev/urandom", 1, 9, 0o666), ("/dev/tty", 5, 0, 0o666),
    ("/dev/ptmx", 5, 2, 0o666),
)

DIRECTORIES = (
    ("/bin", 0o755), ("/sbin", 0o755), ("/usr/bin", 0o755), ("/usr/sbin", 0o755),
    ("/lib", 0o755), ("/etc", 0o755), ("/etc/init.d", 0o755), ("/dev", 0o755),
    ("/dev/pts", 0o755), ("/dev/shm", 0o1777), ("/proc", 0o555), ("/sys", 0o555),
    ("/run", 0o755), ("/tmp", 0o1777), ("/var", 0o755), ("/var/log", 0o755),
    ("/root", 0o700), ("/home", 0o755), ("/mnt", 0o755),
)


def add_skeleton(tree: RootfsTree, recipe_settings: Dict[str, Any], epoch: int) -> None:
    for path, mode in DIRECTORIES:
        tree.add(path, Entry(DIR, mode, mtime=epoch, origin="skeleton"))
    tree.symlink("/var/run", "../run", mtime=epoch, origin="skeleton")
    for path, major, minor, mode in DEVICE_NODES:
        tree.add(path, Entry(CHAR, mode, major=major, minor=minor, mtime=epoch, origin="skeleton"))
    hostname = recipe_settings["hostname"]
    users = recipe_settings["users"]
    files = {
        "/etc/hostname": f"{hostname}\n",
        "/etc/hosts": f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n"
                      "::1\tlocalhost ip6-localhost\n",
        "/etc/passwd": _passwd(users),
        "/etc/group": _group(users),
        "/etc/shells": "/bin/sh\n/bin/ash\n",
        "/etc/resolv.conf": "",
        "/etc/fstab": "# lxembed: filesystems are mounted by the init\n",
    }
    for path, text in files.items():
        tree.write(path, text.encode(), mtime=epoch, origin="skeleton")
    tree.write("/etc/shadow", _shadow(users).encode(), mode=0o640, gid=42, mtime=epoch,
               origin="skeleton")
    network = recipe_settings.get("network") or {}
    interfaces = network.get("interfaces") or []
    tree.write("/etc/network/interfaces", network_interfaces(interfaces).encode(), mtime=epoch,
               origin="skeleton")
    for path in ("/etc/network/if-up.d", "/etc/network/if-down.d", "/etc/network/if-pre-up.d",
                 "/etc/network/if-post-down.d"):
        tree.mkdir(path, mtime=epoch, origin="skeleton")


def _passwd(users: List[Dict[str, Any]]) -> str:
    lines = ["root:x:0:0:root:/root:/bin/sh", "daemon:x:1:1:daemon:/usr/sbin:/bin/false",
             "nobody:x:65534:65534:nobody:/nonexistent:/bin/false"]
    for u in users:
        gid = u["gid"] if u["gid"] is not None else u["uid"]
        home = u["home"] or f"/home/{u['name']}"
        lines.append(f"{u['name']}:x:{u['uid']}:{gid}:{u['name']}:{home}:{u['shell']}")
    return "\n".join(lines) + "\n"


def _group(users: List[Dict[str, Any]]) -> str:
    groups = {"root": [0, []], "daemon": [1, []], "tty": [5, []], "shadow": [42, []],
              "nogroup": [65534, []]}
    for u in users:
        gid = u["gid"] if u["gid"] is not None else u["uid"]
        if not any(g[0] == gid for g in groups.values()):
            groups[u["name"]] = [gid, []]
        for extra in u["groups"]:
            if extra not in groups:
                raise UserError(f"user {u['name']}: unknown group {extra!r}")
            groups[extra][1].append(u["name"])
    return "".join(f"{name}:x:{gid}:{','.join(members)}\n"
                   for name, (gid, members) in groups.items())


def _shadow(users: List[Dict[str, Any]]) -> str:
    # Locked passwords: logins happen on the console as root, or through keys a recipe adds.
    names = ["root", "daemon", "nobody"] + [u["name"] for u in users]
    return "".join(f"{name}:*:19000:0:99999:7:::\n" for name in names)


def network_interfaces(interfaces: List[Dict[str, Any]]) -> str:
    """/etc/network/interfaces for busybox ifup (udhcpc for DHCP)."""
    # lo is brought up by the init (the kernel gives it 127.0.0.1 itself).
    out = ["# lxembed: busybox ifup reads this", ""]
    for iface in interfaces:
        name = iface["name"]
        out.append(f"auto {name}")
        if iface.get("vlan") is not None:
            pre = (f"    pre-up ip link add link {iface['link']} name {name} type vlan "
                   f"id {iface['vlan']}")
        else:
            pre = ""
        if iface["dhcp"]:
            out.append(f"iface {name} inet dhcp")
            out.append("    udhcpc_opts -t 5 -T 1 -s /usr/share/udhcpc/default.script")
        elif iface["ipv4"]:
            addr, _, prefix = iface["ipv4"][0].partition("/")
            out.append(f"iface {name} inet static")
            out.append(f"    address {addr}")
            out.append(f"    netmask {prefix or 24}")
            if iface["gateway4"]:
                out.append(f"    gateway {iface['gateway4']}")
            for extra in iface["ipv4"][1:]:
                out.append(f"    up ip addr add {extra} dev {name}")
        else:
            out.append(f"iface {name} inet manual")
        if pre:
            out.append(pre)
        for addr in iface["ipv6"]:
            out.append(f"    up ip -6 addr add {addr} dev {name}")
        if iface["gateway6"]:
            out.append(f"    up ip -6 route add default via {iface['gateway6']} dev {name}")
        out.append("")
    return "\n".join(out)
