"""The `[container]` recipe table: one Setting per key, read by schema.validate().

Type and choice checks happen here; checks that need several keys at once (a vlan needs an id,
an address needs a prefix, bind-host needs the host's architecture) live in lxembed.containers.
"""

from __future__ import annotations

from .settings import Setting

# What a [container] table builds: format -> its path in the output directory.
CONTAINER_FORMATS = {"lxc": "lxc", "oci": "oci", "libvirt": "libvirt",
                     "oci-image": "oci-image", "oci-archive": "oci-archive.tar",
                     "lxc-image": "lxc-image"}
NETWORK_TYPES = ("empty", "none", "phys", "veth", "vlan", "macvlan")
MACVLAN_MODES = ("bridge", "vepa", "private", "passthru")

# Capabilities dropped unless the recipe says otherwise. CAP_SYS_BOOT stays: the init's
# reboot(2) is how LXC learns halt from reboot. CAP_NET_ADMIN stays: the init may run udhcpc.
HARDENED_CAP_DROP = (
    "audit_control",
    "block_suspend",
    "lease",
    "mac_admin",
    "mac_override",
    "mknod",
    "sys_module",
    "sys_pacct",
    "sys_ptrace",
    "sys_rawio",
    "sys_resource",
    "sys_time",
    "syslog",
    "wake_alarm",
)

CONTAINER_NETWORK_FIELDS = (
    Setting("type", "str", None, "network kind", choices=NETWORK_TYPES),
    Setting("name", "str", None, "interface name inside the container (default: ethN)"),
    Setting(
        "link",
        "str",
        None,
        "host side: bridge (veth), parent (vlan, macvlan), the device itself (phys)",
    ),
    Setting(
        "hwaddr",
        "str",
        None,
        "MAC address (default: a stable locally administered MAC "
        "derived from the container and interface names)",
    ),
    Setting("ipv4", "list", [], "IPv4 addresses with prefix (10.0.3.2/24)"),
    Setting("ipv4_gateway", "str", None, 'IPv4 default gateway (or "auto")'),
    Setting("ipv6", "list", [], "IPv6 addresses with prefix"),
    Setting("ipv6_gateway", "str", None, 'IPv6 default gateway (or "auto")'),
    Setting("mtu", "int", None, "interface MTU"),
    Setting("veth_pair", "str", None, "veth: name of the host-side interface"),
    Setting("vlan_id", "int", None, "vlan: the VLAN id (1-4094)"),
    Setting("macvlan_mode", "str", "private", "macvlan mode", choices=MACVLAN_MODES),
    Setting("flags", "list", ["up"], 'interface flags (LXC knows only "up")'),
    Setting("port", "str", None, "a port of a host network description (docs/networking.md): "
            "type, veth_pair, hwaddr, link and addresses come from it"),
    Setting("description", "str", None, "the network description file of `port`, relative to "
            "the recipe (default: the recipe's own [host_network])"),
)

MOUNT_FIELDS = (
    Setting("source", "str", None, "host path (bind) or filesystem source"),
    Setting("target", "str", None, "absolute path inside the container"),
    Setting("type", "str", "bind", "bind, or a filesystem type (tmpfs, proc...)"),
    Setting("options", "list", ["ro", "nosuid", "nodev"], "mount options"),
    Setting("optional", "bool", False, "skip the mount when the source is missing"),
)

LIMIT_FIELDS = (
    Setting("memory", "str", None, "memory limit: bytes or with a K, M or G suffix (64M)"),
    Setting("pids", "int", None, "most processes at once"),
    Setting("nofile", "int", None, "RLIMIT_NOFILE for the init and its children"),
)

START_FIELDS = (
    Setting("auto", "bool", False, "start at boot (lxc-autostart)"),
    Setting("delay", "int", 0, "seconds to wait after starting it"),
    Setting("order", "int", 0, "start order among autostarted containers (higher first)"),
)

CONTAINER_FIELDS = (
    Setting(
        "mode",
        "str",
        "self-contained",
        "rootfs kind: the host's /usr bound read-only, or the image's own files",
        choices=("bind-host", "self-contained"),
    ),
    Setting("name", "str", None, "container name (default: the recipe name)"),
    Setting("image", "str", None, "image name for oci-image and oci-archive (default: "
            "localhost/lxembed/NAME:latest)"),
    Setting(
        "init",
        "str",
        None,
        "PID 1 (default: python for bind-host, the recipe's `init` for self-contained)",
        choices=("python", "busybox"),
    ),
    Setting("tty", "int", 0, "/dev/ttyN devices (lxc.tty.max)"),
    Setting("pty", "int", 16, "most devpts ptys (lxc.pty.max)"),
    Setting("cap_drop", "list", list(HARDENED_CAP_DROP), "capabilities dropped"),
    Setting(
        "devices",
        "list",
        [],
        'device cgroup rules allowed besides the minimal set ("c 10:200 rwm")',
    ),
    Setting(
        "mount_auto", "list", ["proc:mixed", "sys:mixed", "cgroup:mixed"], "lxc.mount.auto values"
    ),
    Setting("mounts", "tables", [], "extra mounts", fields=MOUNT_FIELDS),
    Setting(
        "host_binds",
        "list",
        ["/etc/alternatives", "/etc/ld.so.cache"],
        "bind-host: host paths under /etc bound read-only (skipped when missing)",
    ),
    Setting("tmpfs", "list", ["/run", "/tmp"], "directories that get a fresh tmpfs"),
    Setting("readonly", "bool", False, "mount the container's root read-only"),
    Setting("environment", "dict", {}, "environment of the init (PATH is always set)"),
    Setting("limits", "table", None, "resource limits", fields=LIMIT_FIELDS),
    Setting("start", "table", None, "start at boot", fields=START_FIELDS),
    Setting("apparmor", "str", None, "AppArmor profile (lxc.apparmor.profile)"),
    Setting("oci_target", "str", "runtime", "who runs the OCI bundle: an OCI runtime (crun, "
            "runc), or OpenWrt's uxc/ujail (procd), which takes only ociVersion 1.0.x and "
            "capability names its kernel headers know (up to checkpoint_restore, Linux 5.9)",
            choices=("runtime", "uxc")),
    Setting("selinux", "str", None, "SELinux context (lxc.selinux.context)"),
    Setting("idmap", "list", [], 'user namespace maps: "u 0 100000 65536", "g 0 100000 65536"'),
    Setting(
        "lxc_version",
        "str",
        None,
        "LXC version the config is written for (default: the LXC of the board's suite, "
        "5.0 on bookworm, 6.0 on trixie); below 3.0 the legacy keys (lxc.utsname, "
        "lxc.network.*) are used",
    ),
    Setting("lxc_raw", "list", [], "extra `key = value` lines appended to the LXC config"),
    Setting(
        "network",
        "tables",
        [],
        "network interfaces ([[container.network]]; none: one empty network namespace with lo up)",
        fields=CONTAINER_NETWORK_FIELDS,
    ),
)
