"""libvirt LXC domain XML (<domain type='lxc'>) from a ContainerSpec, for libvirtd's LXC driver.

The same settings as the LXC config and the OCI bundle, in libvirt's terms. What libvirt cannot
say is decided per setting (docs/containers.md, libvirt): a limit, a capability drop, a device,
a network or a mount the container would silently run without is refused with the recipe's
file:line; a setting whose loss changes nothing the container relies on becomes a warning.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
import xml.etree.ElementTree as ET
from typing import List, Optional, Tuple

from ..errors import UserError
from .network import Network
from .spec import MINIMAL_DEVICES, ContainerSpec, Mount, parse_size

# libvirt's <memory> is required and its LXC driver applies it as the memory limit; this value
# (VIR_DOMAIN_MEMORY_PARAM_UNLIMITED, in KiB) is the one it writes to the cgroup as "no limit".
UNLIMITED_KIB = 9007199254740991
# The capabilities libvirt's <features><capabilities> can name (domaincommon.rng, libvirt 9.0).
LIBVIRT_CAPABILITIES = (
    "audit_control", "audit_write", "block_suspend", "chown", "dac_override", "dac_read_search",
    "fowner", "fsetid", "ipc_lock", "ipc_owner", "kill", "lease", "linux_immutable", "mac_admin",
    "mac_override", "mknod", "net_admin", "net_bind_service", "net_broadcast", "net_raw", "setgid",
    "setfcap", "setpcap", "setuid", "sys_admin", "sys_boot", "sys_chroot", "sys_module",
    "sys_nice", "sys_pacct", "sys_ptrace", "sys_rawio", "sys_resource", "sys_time",
    "sys_tty_config", "syslog", "wake_alarm",
)
# libvirt names a host device by its path (<hostdev mode='capabilities'>), lxembed by number.
# These numbers are fixed by Linux's device list (Documentation/admin-guide/devices.txt), so the
# path is the same on every device; dynamically allocated majors have no such path.
FIXED_DEVICES = {
    ("c", 1, 7): "/dev/full",
    ("c", 1, 11): "/dev/kmsg",
    ("c", 10, 130): "/dev/watchdog",
    ("c", 10, 183): "/dev/hwrng",
    ("c", 10, 200): "/dev/net/tun",
    ("c", 10, 229): "/dev/fuse",
    ("c", 10, 232): "/dev/kvm",
    ("c", 108, 0): "/dev/ppp",
}
FIXED_SERIES = {("c", 4): "/dev/ttyS{}", ("c", 188): "/dev/ttyUSB{}", ("c", 166): "/dev/ttyACM{}",
                ("c", 89): "/dev/i2c-{}"}
_DEVICE_OFFSET = {("c", 4): 64}  # ttyS0 is 4:64
# What libvirt's LXC driver sets up itself, whatever the XML says: these lxembed defaults map.
DEFAULT_MOUNT_AUTO = ["proc:mixed", "sys:mixed", "cgroup:mixed"]
# Mount options libvirt's <filesystem> says (measured in /proc/self/mountinfo, libvirt 9.0): a
# bind only ro (as <readonly/>), a tmpfs (type='ram') is always nosuid,nodev with mode 1777 and
# its size. Other options of a recipe's mount are lost, with a warning; lxembed's own host binds
# lose nosuid,nodev and its /run tmpfs mode 755 (docs/containers.md says so).
_BIND_OPTIONS = ("bind", "rbind", "ro", "rw")
_TMPFS_OPTIONS = ("rw", "nosuid", "nodev", "mode=1777")
_INITENV_NAME = re.compile(r"^[a-zA-Z_]+[a-zA-Z0-9_]*$")
# libvirt keeps an application's own <metadata> element in its namespace: the runner reads the
# stop signal there (the domain XML has no key for it). A URN: no host name to resolve.
METADATA_NS = "urn:lxembed:container"
# What `virsh shutdown --mode signal` sends PID 1 (libvirt's LXC driver, fixed).
SHUTDOWN_SIGNAL = "SIGTERM"
ET.register_namespace("lxembed", METADATA_NS)


def _fail(spec: ContainerSpec, table: str, key: str, message: str, hint: str = "",
          index: int = 0) -> UserError:
    return UserError(f"{spec.where(table, key, index)}: {message}",
                     hint=hint or "build lxc or oci for this recipe, or drop the setting "
                                  "(docs/containers.md, libvirt)")


def _device_path(rule: str) -> Optional[str]:
    kind, numbers, _ = rule.split()
    major, minor = numbers.split(":")
    if not (major.isdigit() and minor.isdigit()):
        return None
    key = (kind, int(major))
    if (kind, int(major), int(minor)) in FIXED_DEVICES:
        return FIXED_DEVICES[(kind, int(major), int(minor))]
    if key in FIXED_SERIES and int(minor) >= _DEVICE_OFFSET.get(key, 0):
        return FIXED_SERIES[key].format(int(minor) - _DEVICE_OFFSET.get(key, 0))
    return None


def _sub(parent: ET.Element, tag: str, text: Optional[str] = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k.rstrip("_"): v for k, v in attrs.items()})
    if text is not None:
        el.text = text
    return el


class _Domain:
    """Builds the XML tree and collects warnings; a setting that cannot be said raises."""

    def __init__(self, spec: ContainerSpec, rootfs: str):
        self.spec, self.rootfs = spec, rootfs
        self.warnings: List[str] = []
        self.root = ET.Element("domain", {"type": "lxc"})

    def warn(self, table: str, key: str, message: str, index: int = 0) -> None:
        self.warnings.append(f"{self.spec.where(table, key, index)}: {message}")

    def build(self, description: List[str]) -> ET.Element:
        s, d = self.spec, self.root
        _sub(d, "name", s.name)
        # A UUID from the name: rebuilding the same container gives the same domain.
        _sub(d, "uuid", str(uuid.uuid5(uuid.NAMESPACE_URL, f"lxembed:container:{s.name}")))
        # Not an XML comment: libvirt keeps <description> (virsh desc), and a comment may not
        # hold the "--" of a command line.
        _sub(d, "description", "\n".join(description))
        metadata = _sub(d, "metadata")
        ET.SubElement(metadata, f"{{{METADATA_NS}}}container",
                      {"mode": s.mode, "init": s.init, "stop-signal": s.signals["stop"]})
        self.limits()
        os_el = _sub(d, "os")
        _sub(os_el, "type", "exe", arch=s.arch.libvirt)
        _sub(os_el, "init", s.init_cmd[0])
        for arg in s.init_cmd[1:]:
            _sub(os_el, "initarg", arg)
        self.environment(os_el)
        self.features()
        self.idmap()
        # A poweroff or halt in the init ends the domain. A reboot(2) restarts it: libvirt's LXC
        # driver does so whatever on_reboot says (measured, libvirt 9.0).
        _sub(d, "on_poweroff", "destroy")
        _sub(d, "on_reboot", "restart")
        _sub(d, "on_crash", "destroy")
        devices = _sub(d, "devices")
        self.filesystems(devices)
        self.networks(devices)
        self.hostdevs(devices)
        for _ in range(1 + s.tty):  # the first is /dev/console, the others /dev/tty1...
            _sub(devices, "console", type_="pty")
        self.leftovers()
        self.security()
        return d

    def limits(self) -> None:
        s = self.spec
        limits = "container.limits"
        if s.pids:
            raise _fail(s, limits, "pids",
                        "libvirt's domain XML has no pids limit: the container would run "
                        "without the limit the recipe sets")
        kib = s.memory // 1024 if s.memory else UNLIMITED_KIB
        _sub(self.root, "memory", str(kib), unit="KiB")
        if s.nofile:
            self.warn(limits, "nofile", "libvirt's domain XML has no RLIMIT_NOFILE: the init "
                      "keeps libvirtd's own limit")

    def environment(self, os_el: ET.Element) -> None:
        s = self.spec
        for name, value in s.environment.items():
            if not _INITENV_NAME.match(name):
                raise _fail(s, "container", "environment",
                            f"environment name {name!r}: libvirt's <initenv> takes only "
                            f"letters, digits and '_', not starting with a digit",
                            hint="rename the variable")
            _sub(os_el, "initenv", value, name=name)

    def features(self) -> None:
        s = self.spec
        features = _sub(self.root, "features")
        # No interface at all would share the host's network; "none" asks for exactly that.
        if not any(n.type == "none" for n in s.networks):
            _sub(features, "privnet")
        unknown = [c for c in s.cap_drop if c not in LIBVIRT_CAPABILITIES]
        if unknown:
            raise _fail(s, "container", "cap_drop",
                        f"libvirt cannot drop the capabilit{'ies' if len(unknown) > 1 else 'y'} "
                        f"{', '.join(unknown)}: the container would keep "
                        f"{'them' if len(unknown) > 1 else 'it'}")
        # "allow": keep every capability but those dropped, like LXC (libvirt's "default"
        # policy would drop its own list besides).
        caps = _sub(features, "capabilities", policy="allow")
        for cap in s.cap_drop:
            _sub(caps, cap, state="off")

    def idmap(self) -> None:
        if not self.spec.idmap:
            return
        idmap = _sub(self.root, "idmap")
        for kind, inside, host, count in self.spec.idmap:
            _sub(idmap, "uid" if kind == "u" else "gid", start=str(inside), target=str(host),
                 count=str(count))

    def filesystems(self, devices: ET.Element) -> None:
        s = self.spec
        root = _sub(devices, "filesystem", type_="mount", accessmode="passthrough")
        _sub(root, "source", dir=self.rootfs)
        _sub(root, "target", dir="/")
        if s.readonly:
            _sub(root, "readonly")
        for m in s.mounts:
            self.mount(devices, m)

    def mount(self, devices: ET.Element, m: Mount) -> None:
        s = self.spec
        index = m.index  # None: one of lxembed's own mounts
        if m.is_bind:
            fs = _sub(devices, "filesystem", type_="mount", accessmode="passthrough")
            _sub(fs, "source", dir=m.source)
            _sub(fs, "target", dir=m.target)
            if "ro" in m.options:
                _sub(fs, "readonly")
            lost = [o for o in m.options if o not in _BIND_OPTIONS]
        elif m.fstype == "tmpfs":
            fs = _sub(devices, "filesystem", type_="ram", accessmode="passthrough")
            # usage 0 is tmpfs's size=0: no size limit, like a tmpfs LXC mounts without size=.
            _sub(fs, "source", usage=str(_tmpfs_kib(m)), units="KiB")
            _sub(fs, "target", dir=m.target)
            lost = [o for o in m.options if o not in _TMPFS_OPTIONS and not o.startswith("size=")]
        else:
            raise _fail(s, "container.mounts", "type",
                        f"libvirt's LXC driver mounts binds and tmpfs only, not {m.fstype!r} "
                        f"at {m.target}", index=index or 0)
        if index is None:
            return
        if lost:
            self.warn("container.mounts", "options",
                      f"libvirt cannot say the mount options {','.join(lost)} of {m.target}: "
                      f"mounted without them", index)
        if m.optional:
            self.warn("container.mounts", "optional",
                      f"libvirt has no optional mounts: the domain fails to start when "
                      f"{m.source} is missing", index)

    def networks(self, devices: ET.Element) -> None:
        for i, net in enumerate(self.spec.networks):
            if net.type in ("empty", "none"):
                continue
            if net.type == "vlan":
                raise _fail(self.spec, "container.network", "type",
                            "libvirt's LXC driver cannot make a VLAN interface for a container",
                            hint="make the VLAN interface on the host and hand it over with "
                                 "type = \"phys\", or bridge it (type = \"veth\")", index=i)
            if net.hooks:
                raise _fail(self.spec, "container.network", "port",
                            f"port {net.hooks[0]} is made by LXC, whose start-host hook sets "
                            f"its host-side MAC and loads its rules; libvirt runs no hook of a "
                            f"domain's own, so the port would run without its rules",
                            hint="let `lxembed net up` make the port (leave created_by out): "
                                 "the container then takes its peer as a phys device", index=i)
            if net.type == "phys":
                continue  # a <hostdev>, below
            if net.type == "macvlan":
                iface = _sub(devices, "interface", type_="direct")
                mode = "passthrough" if net.macvlan_mode == "passthru" else net.macvlan_mode
                _sub(iface, "source", dev=net.link, mode=mode)
            elif net.link:
                iface = _sub(devices, "interface", type_="bridge")
                _sub(iface, "source", bridge=net.link)
            else:
                iface = _sub(devices, "interface", type_="ethernet")
            if net.hwaddr:
                _sub(iface, "mac", address=net.hwaddr)
            if net.veth_pair:
                _sub(iface, "target", dev=net.veth_pair)
            _sub(iface, "guest", dev=net.name)
            self.addresses(iface, net, i)
            if net.mtu:
                _sub(iface, "mtu", size=str(net.mtu))

    def addresses(self, parent: ET.Element, net: Network, index: int) -> None:
        for version in ("ipv4", "ipv6"):
            for address in getattr(net, version):
                iface = ipaddress.ip_interface(address)
                _sub(parent, "ip", address=str(iface.ip), prefix=str(iface.network.prefixlen),
                     family=version)
        for version, anywhere in (("ipv4", "0.0.0.0"), ("ipv6", "::")):
            gateway = getattr(net, f"{version}_gateway")
            if gateway in ("auto", "dev"):
                raise _fail(self.spec, "container.network", f"{version}_gateway",
                            f'{version}_gateway = "{gateway}": libvirt takes only an address '
                            f"for a route", hint="write the gateway's address", index=index)
            if gateway:
                _sub(parent, "route", family=version, address=anywhere, prefix="0",
                     gateway=gateway)

    def hostdevs(self, devices: ET.Element) -> None:
        s = self.spec
        for i, net in enumerate(s.networks):
            if net.type != "phys":
                continue
            host = _sub(devices, "hostdev", mode="capabilities", type_="net")
            _sub(_sub(host, "source"), "interface", net.link)
            self.addresses(host, net, i)
            if net.name != net.link:
                self.warn("container.network", "type",
                          f"libvirt moves {net.link} in under its own name, not as {net.name}",
                          i)
        minimal = {rule for rule, _ in MINIMAL_DEVICES}
        for rule in s.devices:
            if rule in minimal:
                continue  # libvirt's LXC driver allows these itself
            path = _device_path(rule) if rule != "a" else None
            if path is None:
                raise _fail(s, "container", "devices",
                            f"device rule {rule!r}: libvirt allows a host device by its path, "
                            f"and this number has no fixed one (a range, or a dynamic major)",
                            hint="one rule per device with a fixed number (c 10:200 rwm is "
                                 "/dev/net/tun), or build lxc or oci")
            host = _sub(devices, "hostdev", mode="capabilities",
                        type_="storage" if rule[0] == "b" else "misc")
            _sub(_sub(host, "source"), "block" if rule[0] == "b" else "char", path)
            if rule.split()[2] != "rwm":
                self.warn("container", "devices",
                          f"device rule {rule!r}: libvirt allows {path} read-write")

    def security(self) -> None:
        s = self.spec
        if s.apparmor and s.apparmor != "unconfined":
            raise _fail(s, "container", "apparmor",
                        f"apparmor = {s.apparmor!r}: libvirt makes its own AppArmor profile "
                        f"per domain and cannot name one")
        if s.selinux:
            label = _sub(self.root, "seclabel", type_="static", model="selinux", relabel="no")
            _sub(label, "label", s.selinux)

    def leftovers(self) -> None:
        """Settings with no libvirt counterpart whose loss the container does not rely on."""
        s = self.spec
        if s.mount_auto != DEFAULT_MOUNT_AUTO:
            self.warn("container", "mount_auto",
                      "libvirt mounts /proc, /sys and the cgroups its own way: mount_auto is "
                      "left out")
        if s.lxc_raw:
            self.warn("container", "lxc_raw", "lxc_raw lines are LXC keys: left out of the "
                      "libvirt domain")
        if s.start_auto:
            self.warn("container.start", "auto",
                      f"autostart is not part of a domain's XML: run `virsh autostart {s.name}`")
        if s.start_delay or s.start_order:
            self.warn("container.start", "order" if s.start_order else "delay",
                      "libvirt has no start order or delay: left out")
        if s.signals["stop"] != SHUTDOWN_SIGNAL:
            self.warn("container", "",
                      f"{s.init} init reboots on {SHUTDOWN_SIGNAL}, which `virsh shutdown --mode "
                      f"signal` sends (and libvirt restarts a rebooted container): stop it with "
                      f"`virsh send-process-signal {s.name} 1 {s.signals['stop']}`")
        if s.init == "busybox":
            # libvirt names the container's host after the domain; busybox init sets none.
            if s.hostname != s.name:
                self.warn("", "hostname", f"libvirt names the host {s.name!r} (the domain), "
                          f"and busybox init sets no other")


def _tmpfs_kib(m: Mount) -> int:
    for option in m.options:
        if option.startswith("size="):
            size = parse_size(option[len("size="):])
            if size:
                return size // 1024
    return 0


def libvirt_domain(spec: ContainerSpec, rootfs: str, board: str = "",
                   recipe: str = "") -> Tuple[str, List[str]]:
    """The domain XML text and the warnings for what it leaves out; `rootfs` is the absolute
    path of rootfs/. Raises a UserError naming the recipe line of a setting libvirt cannot say
    and the container cannot do without."""
    domain = _Domain(spec, rootfs)
    stop = spec.signals["stop"]
    description = [
        f"lxembed: container {spec.name} ({board}/{recipe}), {spec.mode}, init {spec.init}",
        "start: virsh -c lxc:/// define THIS_FILE; virsh -c lxc:/// start " + spec.name,
        f"stop: {stop_command(spec.name, stop)} ({stop}; plain `virsh shutdown` tries initctl "
        f"and never signals this init)",
    ]
    tree = ET.ElementTree(domain.build(description))
    ET.indent(tree, "  ")
    return ET.tostring(tree.getroot(), encoding="unicode") + "\n", domain.warnings


def stop_command(name: str, stop_signal: str) -> str:
    """The virsh command that stops the domain the way its init expects."""
    if stop_signal == SHUTDOWN_SIGNAL:
        return f"virsh -c lxc:/// shutdown {name} --mode signal"
    return f"virsh -c lxc:/// send-process-signal {name} 1 {stop_signal}"


def check_libvirt(spec: ContainerSpec) -> List[str]:
    """The warnings a libvirt domain of `spec` will carry; raises what it cannot say."""
    return libvirt_domain(spec, "/")[1]
