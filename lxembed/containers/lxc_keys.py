"""The configuration keys each LXC release knows, as data taken from its own src/lxc/confile.c.

Each release looks a key up in one table (`config[]`, `config_jump_table[]`, and from 5.0
`config_jump_table_net[]` for the `lxc.net.N.*` sub-keys); LXC 2.0 and later reject a key that is
not there ("Unknown configuration key"), 1.x silently misreads some. The names below are that
table at each release tag (lxc-1.0.0 ... lxc-5.0.0, then v6.0.0: LXC 6 tags as vX.Y.Z), written
as the first table plus what each release added and removed. To check or extend them, in a clone
of LXC: `git show lxc-X.Y.0:src/lxc/confile.c` (`vX.Y.Z` from 6.0) and read the table.
"""

from __future__ import annotations

import re
from typing import Dict, FrozenSet, Tuple

Version = Tuple[int, int]

_FIRST = (
    (1, 0),
    """
    lxc.aa_profile lxc.arch lxc.autodev lxc.cap.drop lxc.cap.keep lxc.cgroup lxc.console
    lxc.devttydir lxc.group lxc.haltsignal lxc.hook.autodev lxc.hook.clone lxc.hook.mount
    lxc.hook.post-stop lxc.hook.pre-mount lxc.hook.pre-start lxc.hook.start lxc.id_map
    lxc.include lxc.kmsg lxc.logfile lxc.loglevel lxc.mount lxc.network. lxc.network.flags
    lxc.network.hwaddr lxc.network.ipv4 lxc.network.ipv4.gateway lxc.network.ipv6
    lxc.network.ipv6.gateway lxc.network.link lxc.network.macvlan.mode lxc.network.mtu
    lxc.network.name lxc.network.script.down lxc.network.script.up lxc.network.type
    lxc.network.veth.pair lxc.network.vlan.id lxc.pivotdir lxc.pts lxc.rootfs
    lxc.rootfs.mount lxc.rootfs.options lxc.se_context lxc.seccomp lxc.start.auto
    lxc.start.delay lxc.start.order lxc.stopsignal lxc.tty lxc.utsname
    lxc.mount.entry lxc.mount.auto
    """,
    # The last line: not table entries in 1.0/1.1, but the sub-keys the `lxc.mount` entry's
    # handler reads (config_mount); 2.0 gave them entries of their own.
)

# (release, added, removed)
_CHANGES = (
    ((1, 1), "lxc.aa_allow_incomplete lxc.console.logfile lxc.environment lxc.hook lxc.init_cmd"
             " lxc.network", ""),
    ((2, 0), "lxc.ephemeral lxc.hook.destroy lxc.hook.stop lxc.init_gid lxc.init_uid"
             " lxc.monitor.unshare lxc.rebootsignal lxc.rootfs.backend", ""),
    ((2, 1), """
    lxc.apparmor.allow_incomplete lxc.apparmor.profile lxc.cgroup.dir lxc.console.path
    lxc.idmap lxc.init.cmd lxc.init.gid lxc.init.uid lxc.limit lxc.log.file lxc.log.level
    lxc.log.syslog lxc.mount.fstab lxc.net lxc.net. lxc.net.flags lxc.net.hwaddr
    lxc.net.ipv4.address lxc.net.ipv4.gateway lxc.net.ipv6.address lxc.net.ipv6.gateway
    lxc.net.link lxc.net.macvlan.mode lxc.net.mtu lxc.net.name lxc.net.script.down
    lxc.net.script.up lxc.net.type lxc.net.veth.pair lxc.net.vlan.id lxc.no_new_privs
    lxc.prlimit lxc.pty.max lxc.rootfs.path lxc.seccomp.profile lxc.selinux.context
    lxc.signal.halt lxc.signal.reboot lxc.signal.stop lxc.syslog lxc.tty.dir lxc.tty.max
    lxc.uts.name
    """, "lxc.kmsg lxc.pivotdir"),
    ((3, 0), """
    lxc.cgroup2 lxc.console.buffer.size lxc.console.rotate lxc.console.size lxc.execute.cmd
    lxc.hook.start-host lxc.hook.version lxc.init.cwd lxc.namespace.clone lxc.namespace.keep
    lxc.namespace.share lxc.proc lxc.sysctl
    """, """
    lxc.aa_allow_incomplete lxc.aa_profile lxc.console lxc.devttydir lxc.haltsignal
    lxc.id_map lxc.init_cmd lxc.init_gid lxc.init_uid lxc.limit lxc.logfile lxc.loglevel
    lxc.mount lxc.network lxc.network. lxc.network.flags lxc.network.hwaddr lxc.network.ipv4
    lxc.network.ipv4.gateway lxc.network.ipv6 lxc.network.ipv6.gateway lxc.network.link
    lxc.network.macvlan.mode lxc.network.mtu lxc.network.name lxc.network.script.down
    lxc.network.script.up lxc.network.type lxc.network.veth.pair lxc.network.vlan.id lxc.pts
    lxc.rebootsignal lxc.rootfs lxc.rootfs.backend lxc.se_context lxc.seccomp lxc.stopsignal
    lxc.syslog lxc.tty lxc.utsname
    """),
    ((3, 1), "lxc.apparmor.allow_nesting lxc.apparmor.raw lxc.cgroup.relative"
             " lxc.monitor.signal.pdeath lxc.rootfs.managed", ""),
    ((3, 2), """
    lxc.net.ipvlan.isolation lxc.net.ipvlan.mode lxc.net.l2proxy lxc.net.veth.ipv4.route
    lxc.net.veth.ipv6.route lxc.net.veth.mode lxc.seccomp.allow_nesting
    lxc.seccomp.notify.cookie lxc.seccomp.notify.proxy
    """, ""),
    ((4, 0), "lxc.autodev.tmpfs.size lxc.keyring.session lxc.selinux.context.keyring", ""),
    ((5, 0), """
    lxc.cgroup.dir.container lxc.cgroup.dir.container.inner lxc.cgroup.dir.monitor
    lxc.cgroup.dir.monitor.pivot lxc.init.groups lxc.namespace.share.
    lxc.net.veth.n_rxqueues lxc.net.veth.n_txqueues lxc.net.veth.vlan.id
    lxc.net.veth.vlan.tagged.id lxc.sched.core lxc.time.offset.boot
    lxc.time.offset.monotonic
    """, "lxc.namespace.share"),
    # 6.0 (trixie's LXC): both tables as 5.0's, read at every tag v6.0.0 ... v6.0.6 (the
    # 6.0 LTS series; trixie has 6.0.4). A release of its own so that `lxc_version = "6.0"`
    # is checked against its own table, and a key 6.x adds goes here.
    ((6, 0), "", ""),
)

# Entries whose handler reads a sub-key of its own (lxc.cgroup.memory.max, lxc.prlimit.nofile):
# 5.0 marks exactly these non-strict; lxc.limit is 2.1's older name for lxc.prlimit.
_FAMILIES = ("lxc.cgroup", "lxc.cgroup2", "lxc.prlimit", "lxc.limit", "lxc.sysctl", "lxc.proc",
             "lxc.namespace.share")
# lxc.net.0.type and lxc.network.0.type are looked up without their index.
_INDEX = re.compile(r"^(lxc\.net|lxc\.network)\.\d+\.")


def _tables() -> Dict[Version, FrozenSet[str]]:
    version, text = _FIRST
    keys = set(text.split())
    tables = {version: frozenset(keys)}
    for version, added, removed in _CHANGES:
        keys = (keys | set(added.split())) - set(removed.split())
        tables[version] = frozenset(keys)
    return tables


TABLES = _tables()
OLDEST = min(TABLES)


def table_version(version: Version) -> Version:
    """The release whose table applies to `version`: the newest one not after it."""
    return max(v for v in TABLES if v <= version)


def knows(version: Version, key: str) -> bool:
    """Does LXC `version` have `key`? (version >= OLDEST)"""
    table = TABLES[table_version(version)]
    key = _INDEX.sub(r"\1.", key)
    if key in table:
        return True
    return any(key.startswith(family + ".") for family in _FAMILIES
               if family in table or family + "." in table)
