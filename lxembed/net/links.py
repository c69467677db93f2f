"""Links, addresses, routes and namespaces through pyroute2 (netlink): no `ip` subprocesses.

`LinkSetup` makes each object of a model exist as declared, and announces in the Journal every
object it creates or changes before it does (write-ahead), so a failure or a kill part-way, and
`down`, can undo exactly that.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from typing import Any, Dict, List, Optional

from ..errors import UserError
from .journal import Journal
from .model import Bridge, Macvlan, NetworkModel, Phys, Port, Veth, Vlan

NETNS_DIR = "/run/netns"


def _rtnl():
    try:
        from pyroute2 import IPRoute, netns
        from pyroute2.netlink.exceptions import NetlinkError
    except ImportError:  # pragma: no cover - a declared dependency
        raise UserError("pyroute2 is not installed", hint="pip install pyroute2") from None
    return IPRoute, netns, NetlinkError


def netns_exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, name))


def netns_usable(name: str) -> bool:
    """A namespace is bound there, not just the empty file `ip netns add` (or pyroute2) first
    makes: a creator killed between the two leaves the file alone, which cannot be entered."""
    path = os.path.join(NETNS_DIR, name)
    try:
        return os.stat(path).st_dev != os.stat(NETNS_DIR).st_dev  # nsfs, not the directory's
    except OSError:
        return False


def create_netns(name: str) -> None:
    """A named namespace bound under /run/netns, as `ip netns add` makes it."""
    _, netns, _ = _rtnl()
    netns.create(name)


def remove_netns(name: str) -> None:
    _, netns, _ = _rtnl()
    if netns_exists(name):
        netns.remove(name)


class Rtnl:
    """One netlink socket per namespace (None: the host's), opened on first use."""

    def __init__(self):
        self.IPRoute, _, self.NetlinkError = _rtnl()
        self.sockets: Dict[Optional[str], Any] = {}

    def __call__(self, ns: Optional[str] = None):
        if ns not in self.sockets:
            if ns is not None and not netns_exists(ns):
                raise UserError(f"network namespace {ns!r} does not exist")
            self.sockets[ns] = self.IPRoute(netns=ns) if ns else self.IPRoute()
        return self.sockets[ns]

    def close(self) -> None:
        for s in self.sockets.values():
            s.close()
        self.sockets.clear()

    def links(self, ns: Optional[str] = None) -> Dict[str, Any]:
        return {m.get_attr("IFLA_IFNAME"): m for m in self(ns).get_links()}

    def index(self, name: str, ns: Optional[str] = None) -> Optional[int]:
        found = self(ns).link_lookup(ifname=name)
        return found[0] if found else None

    def addresses(self, index: int, ns: Optional[str] = None) -> List[str]:
        return [f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
                for a in self(ns).get_addr(index=index)]


def kind_of(msg) -> Optional[str]:
    info = msg.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info else None


def _family(address: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_interface(address).version == 6 else socket.AF_INET


class LinkSetup:
    """Brings a model's links up, journaling what it creates (see Journal for the undo).

    Each change is made inside `journal.change(...)`: recorded durably first, then made. A
    link's record carries its type and MAC, by which a later run tells a link an interrupted
    run made from a foreign one of the same name.

    The host's links are dumped once; a link made here is known to be as declared, so it is
    never read back (pyroute2 decodes a link message in ~1 ms: re-reading would dominate).
    """

    def __init__(self, model: NetworkModel, journal: Journal, owned: List[Dict[str, Any]]):
        self.model, self.journal, self.rtnl = model, journal, Rtnl()
        # Objects a previous `up` of this description made (or an interrupted one announced
        # and did make): ours to adjust, not to refuse.
        self.owned = {(e.get("netns"), e["name"]) for e in owned if e["kind"] == "link"}
        self.host = self.rtnl.links()
        self.indexes = {name: msg["index"] for name, msg in self.host.items()}
        # Namespaces this description made (this run, or one it took over): lo is index 1
        # there, and setting it up is not a change to record.
        self.new_namespaces = {e["name"] for e in owned if e["kind"] == "netns"}
        self.lo_done: set = set()

    def close(self) -> None:
        self.rtnl.close()

    def run(self) -> None:
        m = self.model
        for ns in m.namespaces():
            if netns_usable(ns):
                continue
            if netns_exists(ns):  # the bare file of a creation or removal cut short (kill -9)
                if ns not in self.new_namespaces:
                    raise UserError(f"netns {ns}: {NETNS_DIR}/{ns} holds no namespace and was "
                                    "not made by this description", hint=f"ip netns del {ns}")
                remove_netns(ns)  # ours: made again below
            with self.journal.change("netns", ns):
                self.step(f"netns {ns}", lambda ns=ns: create_netns(ns))
            self.new_namespaces.add(ns)
        for b in m.bridges:
            self.step(f"bridge {b.name}", lambda b=b: self.bridge(b))
        for v in m.veths:
            self.step(f"veth {v.name}", lambda v=v: self.veth(v))
        for p in m.ports:
            if p.created_by == "lxembed":
                self.step(f"port {p.name}", lambda p=p: self.port(p))
        for v in m.vlans:
            self.step(f"vlan {v.name}", lambda v=v: self.vlan(v))
        for v in m.macvlans:
            self.step(f"macvlan {v.name}", lambda v=v: self.macvlan(v))
        for v in m.phys:
            self.step(f"phys {v.name}", lambda v=v: self.phys(v))

    def step(self, what: str, fn) -> None:
        try:
            fn()
        except UserError as err:
            raise UserError(f"{what}: {err}", hint=err.hint) from None
        except self.rtnl.NetlinkError as err:
            hint = "run it as root (it needs CAP_NET_ADMIN)" if err.code == errno.EPERM else ""
            raise UserError(f"{what}: {os.strerror(err.code) if err.code else err}",
                            hint=hint) from None
        except OSError as err:
            raise UserError(f"{what}: {err.strerror or err}") from None

    # -- helpers ---------------------------------------------------------------------------
    def index(self, name: str) -> int:
        if name not in self.indexes:
            found = self.rtnl.index(name)
            if found is None:
                raise UserError(f"{name} does not exist")
            self.indexes[name] = found
        return self.indexes[name]

    def existing(self, name: str, kind: Optional[str], ns: Optional[str] = None):
        """The link if it exists with the right kind; refuses a different one."""
        msg = self.host.get(name) if ns is None else self.rtnl.links(ns).get(name)
        if msg is None:
            return None
        have = kind_of(msg) or "device"
        if kind and have != kind:
            where = f" in netns {ns}" if ns else ""
            raise UserError(f"{name}{where} exists and is a {have}, not a {kind}; "
                            f"rename it or the description's {kind}")
        if not self.ours(name, ns) and kind in ("veth", "macvlan"):
            where = f" in netns {ns}" if ns else ""
            raise UserError(f"{name}{where} exists and was not made by this description")
        return msg

    def creating(self, name: str, kind: str, mac: Optional[str], ns: Optional[str] = None):
        """The journal record around making a link (deleting it undoes all that is on it)."""
        return self.journal.change("link", name, netns=ns, type=kind, mac=mac)

    def ours(self, name: str, ns: Optional[str] = None) -> bool:
        return (ns, name) in self.owned

    def ensure_addresses(self, name: str, addresses: List[str], ns: Optional[str] = None,
                         mine: bool = True, fresh: bool = False) -> None:
        if not addresses:
            return
        ipr = self.rtnl(ns)
        index = self.index(name) if ns is None else self.rtnl.index(name, ns)
        have = set() if fresh else set(self.rtnl.addresses(index, ns))
        for a in addresses:
            iface = ipaddress.ip_interface(a)
            if f"{iface.ip}/{iface.network.prefixlen}" in have:
                continue
            add = dict(index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen,
                       family=_family(a))
            if mine:  # goes with the link
                ipr.addr("add", **add)
                continue
            with self.journal.change("address", name, netns=ns, address=a):
                ipr.addr("add", **add)  # on a link we did not make: `down` removes just this

    def ensure_up(self, msg, ns: Optional[str] = None) -> None:
        if not msg["flags"] & 1:  # IFF_UP
            self.rtnl(ns).link("set", index=msg["index"], state="up")

    def ensure_mac(self, msg, mac: str, ns: Optional[str] = None) -> None:
        if msg.get_attr("IFLA_ADDRESS") != mac:
            self.rtnl(ns).link("set", index=msg["index"], address=mac)

    def ensure_master(self, msg, bridge: str) -> None:
        want = self.index(bridge)
        if msg.get_attr("IFLA_MASTER") != want:
            self.rtnl().link("set", index=msg["index"], master=want)

    def ensure_isolated(self, msg, isolated: bool) -> None:
        have = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_SLAVE_DATA", "IFLA_BRPORT_ISOLATED")
        if bool(have) != isolated:
            self.rtnl().brport("set", index=msg["index"], isolated=int(isolated))

    def netns_side(self, name: str, ns: str, addresses: List[str], gateway: Optional[str],
                   fresh: bool) -> None:
        """Inside a namespace: lo and the interface up, addresses, the default route."""
        ipr = self.rtnl(ns)
        if fresh:  # made just now, down and bare: no need to read it back
            ipr.link("set", index=self.rtnl.index(name, ns), state="up")
        else:
            self.ensure_up(self.rtnl.links(ns)[name], ns)
        if ns not in self.lo_done:
            if ns in self.new_namespaces:
                ipr.link("set", index=1, state="up")  # lo is always 1 in a new namespace
            else:
                lo = self.rtnl.links(ns)["lo"]
                if not lo["flags"] & 1:  # a namespace that was there: `down` puts lo back
                    with self.journal.change("up", "lo", netns=ns):
                        ipr.link("set", index=lo["index"], state="up")
            self.lo_done.add(ns)
        self.ensure_addresses(name, addresses, ns, fresh=fresh)
        if gateway:
            family = socket.AF_INET6 if ":" in gateway else socket.AF_INET
            dst = "::/0" if family == socket.AF_INET6 else "0.0.0.0/0"
            have = [] if fresh else [
                r for r in ipr.get_routes(family=family, table=254)
                if r["dst_len"] == 0 and r.get_attr("RTA_GATEWAY") == gateway]
            if not have:
                ipr.route("add", dst=dst, gateway=gateway, family=family)

    def _netns_fd(self, ns: str) -> int:
        return os.open(os.path.join(NETNS_DIR, ns), os.O_RDONLY)

    # -- objects ---------------------------------------------------------------------------
    def bridge(self, b: Bridge) -> None:
        msg = self.existing(b.name, "bridge")
        mine = msg is None or self.ours(b.name)
        if msg is None:
            kwargs = dict(ifname=b.name, kind="bridge", address=b.hwaddr, state="up",
                          br_stp_state=int(b.stp), br_forward_delay=b.forward_delay * 100)
            if b.vlan_filtering:  # only when asked: kernels without it refuse even a 0
                kwargs["br_vlan_filtering"] = 1
            if b.mtu:
                kwargs["mtu"] = b.mtu
            with self.creating(b.name, "bridge", b.hwaddr):
                try:
                    self.rtnl().link("add", **kwargs)
                except self.rtnl.NetlinkError as err:
                    if err.code == errno.EOPNOTSUPP and b.vlan_filtering:
                        raise UserError("the kernel has no bridge VLAN filtering "
                                        "(CONFIG_BRIDGE_VLAN_FILTERING)") from None
                    raise
            self.ensure_addresses(b.name, b.addresses, fresh=True)
            return
        if mine:
            self.ensure_mac(msg, b.hwaddr)
            self.ensure_up(msg)
        # A bridge that was there before is used as it is: only our addresses are added.
        self.ensure_addresses(b.name, b.addresses, mine=mine)

    def veth(self, v: Veth) -> None:
        if self.existing(v.name, "veth") is None:
            with self.creating(v.name, "veth", v.hwaddr):
                self.rtnl().link("add", ifname=v.name, kind="veth", address=v.hwaddr,
                                 state="up", peer={"ifname": v.peer, "address": v.peer_hwaddr})
            self.rtnl().link("set", index=self.index(v.peer), state="up")
            return
        self.ensure_up(self.host[v.name])
        self.ensure_up(self.host[v.peer])

    def port(self, p: Port) -> None:
        msg = self.existing(p.name, "veth")
        if msg is None:
            peer: Dict[str, Any] = {"ifname": p.peer, "address": p.peer_hwaddr}
            fd = None
            if p.netns:
                # The peer is born in its namespace: never a moment on the host under its name.
                fd = peer["net_ns_fd"] = self._netns_fd(p.netns)
            try:
                with self.creating(p.name, "veth", p.hwaddr):
                    self.rtnl().link("add", ifname=p.name, kind="veth", address=p.hwaddr,
                                     master=self.index(p.bridge), state="up", peer=peer)
            finally:
                if fd is not None:
                    os.close(fd)
            if p.isolated:
                self.rtnl().brport("set", index=self.index(p.name), isolated=1)
        else:
            self.ensure_mac(msg, p.hwaddr)
            self.ensure_master(msg, p.bridge)
            self.ensure_up(msg)
            self.ensure_isolated(msg, p.isolated)
        if p.netns:
            self.netns_side(p.peer, p.netns, p.addresses, p.gateway, fresh=msg is None)

    def macvlan(self, v: Macvlan) -> None:
        parent = self.index(v.parent)
        msg = self.existing(v.name, "macvlan", v.netns)
        if msg is None:
            kwargs: Dict[str, Any] = dict(ifname=v.name, kind="macvlan", link=parent,
                                          macvlan_mode=v.mode, address=v.hwaddr, state="up")
            fd = None
            if v.netns:
                fd = kwargs["net_ns_fd"] = self._netns_fd(v.netns)
            try:
                with self.creating(v.name, "macvlan", v.hwaddr, v.netns):
                    self.rtnl().link("add", **kwargs)
            finally:
                if fd is not None:
                    os.close(fd)
        if v.netns:
            self.netns_side(v.name, v.netns, v.addresses, v.gateway, fresh=msg is None)
            return
        if msg is not None:
            self.ensure_up(msg)
        self.ensure_addresses(v.name, v.addresses, fresh=msg is None)
        ipr = self.rtnl()
        for route in v.routes:
            net = ipaddress.ip_network(route)
            try:
                ipr.route("add", dst=str(net), oif=self.index(v.name), scope=253,  # on-link
                          family=socket.AF_INET6 if net.version == 6 else socket.AF_INET)
            except self.rtnl.NetlinkError as err:
                if err.code != errno.EEXIST:
                    raise

    def vlan(self, v: Vlan) -> None:
        parent = self.index(v.parent)
        msg = self.existing(v.name, "vlan")
        if msg is None:
            kwargs: Dict[str, Any] = dict(ifname=v.name, kind="vlan", link=parent,
                                          vlan_id=v.id, state="up")
            if v.bridge:
                kwargs["master"] = self.index(v.bridge)
            with self.creating(v.name, "vlan", None):  # its MAC is its parent's
                try:
                    self.rtnl().link("add", **kwargs)
                except self.rtnl.NetlinkError as err:
                    if err.code == errno.EOPNOTSUPP:
                        raise UserError("the kernel has no VLAN support (8021q)") from None
                    raise
        elif v.bridge:
            self.ensure_master(msg, v.bridge)
        self.ensure_addresses(v.name, v.addresses, fresh=msg is None)

    def phys(self, v: Phys) -> None:
        msg = self.host.get(v.name)
        if v.netns:
            if msg is None and v.name in self.rtnl.links(v.netns):
                return  # handed over by an earlier `up`
            if msg is None:
                raise UserError(f"{v.name} does not exist")
            fd = self._netns_fd(v.netns)
            try:
                with self.journal.change("moved", v.name, netns=v.netns):
                    self.rtnl().link("set", index=msg["index"], net_ns_fd=fd)
            finally:
                os.close(fd)
            return
        if msg is None:
            raise UserError(f"{v.name} does not exist")
        want = self.index(v.bridge)
        if msg.get_attr("IFLA_MASTER") != want:
            previous = msg.get_attr("IFLA_MASTER")
            names = {m["index"]: n for n, m in self.host.items()}
            with self.journal.change("master", v.name, previous=names.get(previous)):
                self.rtnl().link("set", index=msg["index"], master=want)
        if not msg["flags"] & 1:  # not ours: `down` puts it back down
            with self.journal.change("up", v.name):
                self.rtnl().link("set", index=msg["index"], state="up")
