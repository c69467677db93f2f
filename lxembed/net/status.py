"""`net show` (what is in force) and `net check` (how the host differs from the description)."""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional

from . import dhcp, rules
from .journal import interrupted
from .links import Rtnl, kind_of, netns_usable
from .model import NetworkModel
from .state import load_state, state_dir


def _link_row(msg, rtnl: Rtnl, ns: Optional[str], names: Dict[int, str]) -> Dict[str, Any]:
    master = msg.get_attr("IFLA_MASTER")
    row = {"name": msg.get_attr("IFLA_IFNAME"), "netns": ns, "kind": kind_of(msg) or "device",
           "mac": msg.get_attr("IFLA_ADDRESS"), "up": bool(msg["flags"] & 1),
           "master": names.get(master) if master else None,
           "addresses": sorted(rtnl.addresses(msg["index"], ns))}
    if master:
        info = rtnl(ns).brport("show", index=msg["index"])
        if info:
            row["isolated"] = bool(info[0].get_nested("IFLA_PROTINFO", "IFLA_BRPORT_ISOLATED"))
    return row


def _declared(model: NetworkModel) -> List[tuple]:
    """(netns, name) of every link the description makes or uses."""
    out = [(None, n) for n in model.host_links()] + [(None, p.name) for p in model.phys
                                                     if p.bridge]
    out += [(p.netns, p.peer) for p in model.ports if p.netns]
    out += [(m.netns, m.name) for m in model.macvlans if m.netns]
    return out


def show(model: NetworkModel) -> Dict[str, Any]:
    rtnl = Rtnl()
    try:
        links = []
        by_ns: Dict[Optional[str], Dict[str, Any]] = {}
        for ns, name in _declared(model):
            if ns is not None and not netns_usable(ns):
                continue
            if ns not in by_ns:
                by_ns[ns] = rtnl.links(ns)
            msg = by_ns[ns].get(name)
            if msg is not None:
                names = {m["index"]: n for n, m in by_ns[ns].items()}
                links.append(_link_row(msg, rtnl, ns, names))
    finally:
        rtnl.close()
    state = load_state(model.name)
    tables = {}
    # the description's tables, and the own tables of ports LXC makes (their hooks load them)
    ours = state.get("tables", rules.tables_in(rules.render(model)))
    ours += [["bridge", rules.port_table_name(p.name)] for p in model.ports
             if p.created_by == "lxc"]
    for family, table in ours:
        text = rules.list_table(family, table)
        if text is not None:
            tables[f"{family} {table}"] = text
    return {"name": model.name, "up": bool(state), "interrupted": interrupted(model.name),
            "links": links,
            "rules": {"count": sum(rules.count_rules(t) for t in tables.values()),
                      "tables": tables},
            "leases": dhcp.leases(state_dir() / model.name)}


def describe_interrupted(run: Dict[str, Any], path: str) -> str:
    """One line on a journal that is still there: a run going on, or one that was cut off."""
    if run["running"]:
        return f"{run['running']} is running now"
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run["started"])) \
        if run.get("started") else "at an unknown time"
    last = f", the last {run['last']}" if run["last"] else ""
    return (f"an interrupted `net {run['op']}` (pid {run['pid']}, started {when}) announced "
            f"{run['changes']} change(s){last}: `lxembed net up {path}` finishes it, "
            f"`lxembed net down {path}` removes what it made")


def format_show(info: Dict[str, Any], path: str = "FILE") -> str:
    state = "up" if info["up"] else "not up (no recorded state)"
    if info.get("interrupted"):
        state += "; " + describe_interrupted(info["interrupted"], path)
    lines = [f"network {info['name']}: {state}", "",
             f"{'LINK':16} {'NETNS':8} {'KIND':8} {'MAC':17} {'STATE':5} {'MASTER':10} "
             "ADDRESSES"]
    for r in info["links"]:
        flags = " isolated" if r.get("isolated") else ""
        lines.append(f"{r['name']:16} {r['netns'] or '-':8} {r['kind']:8} {r['mac'] or '-':17} "
                     f"{'up' if r['up'] else 'down':5} {(r['master'] or '-') + flags:10} "
                     f"{' '.join(r['addresses']) or '-'}")
    tables = ", ".join(info["rules"]["tables"]) or "no table"
    lines += ["", f"rules: {info['rules']['count']} in {tables}"]
    for text in info["rules"]["tables"].values():
        lines.append(text.rstrip())
    for bridge, rows in info["leases"].items():
        lines += ["", f"leases on {bridge}:"]
        lines += [f"  {r['mac']}  {r['ip']:15} {r['hostname']}" for r in rows] or ["  none"]
    return "\n".join(lines)


def check(model: NetworkModel) -> List[str]:
    """Differences between the host and the description; [] when it is in force."""
    diffs: List[str] = []
    rtnl = Rtnl()
    try:
        host = rtnl.links()
        names = {m["index"]: n for n, m in host.items()}

        def link(name: str, kind: str, mac: Optional[str], ns: Optional[str] = None,
                 master: Optional[str] = None, addresses=(), isolated=None) -> None:
            where = f"{name} (netns {ns})" if ns else name
            if ns and not netns_usable(ns):
                diffs.append(f"netns {ns} is missing")
                return
            links = host if ns is None else rtnl.links(ns)
            msg = links.get(name)
            if msg is None:
                diffs.append(f"{where}: missing")
                return
            have = kind_of(msg) or "device"
            if kind and have != kind:
                diffs.append(f"{where}: is a {have}, not a {kind}")
            if mac and msg.get_attr("IFLA_ADDRESS") != mac:
                diffs.append(f"{where}: MAC {msg.get_attr('IFLA_ADDRESS')}, declared {mac}")
            if not msg["flags"] & 1:
                diffs.append(f"{where}: down")
            if master is not None:
                got = names.get(msg.get_attr("IFLA_MASTER"))
                if got != master:
                    diffs.append(f"{where}: on {got or 'no bridge'}, declared {master}")
            present = set(rtnl.addresses(msg["index"], ns))
            for a in addresses:
                if a not in present:
                    diffs.append(f"{where}: address {a} missing")
            if isolated is not None:
                info = rtnl(ns).brport("show", index=msg["index"])
                got = bool(info and info[0].get_nested("IFLA_PROTINFO", "IFLA_BRPORT_ISOLATED"))
                if got != isolated:
                    diffs.append(f"{where}: isolated is {got}, declared {isolated}")

        for b in model.bridges:
            link(b.name, "bridge", None, addresses=b.addresses)
        for v in model.veths:
            link(v.name, "veth", v.hwaddr)
            link(v.peer, "veth", v.peer_hwaddr)
        for p in model.ports:
            if p.created_by == "lxc":  # exists while its container runs; then as declared
                if p.name in host:
                    link(p.name, "veth", p.hwaddr, master=p.bridge, isolated=p.isolated)
                    if rules.list_table("bridge", rules.port_table_name(p.name)) is None:
                        diffs.append(f"{p.name}: its container runs without the port's table "
                                     "(lxc.hook.start-host missing?)")
                continue
            link(p.name, "veth", p.hwaddr, master=p.bridge, isolated=p.isolated)
            if p.netns:
                link(p.peer, "veth", p.peer_hwaddr, p.netns, addresses=p.addresses)
        for m in model.macvlans:
            link(m.name, "macvlan", m.hwaddr, m.netns, addresses=m.addresses)
        for v in model.vlans:
            link(v.name, "vlan", None, master=v.bridge, addresses=v.addresses)
        for p in model.phys:
            link(p.name, None, None, p.netns, master=p.bridge)
    finally:
        rtnl.close()
    run = interrupted(model.name)
    if run:
        diffs.insert(0, describe_interrupted(run, str(model.path)))
    diffs += _check_rules(model)
    for b in model.bridges:
        if b.dhcp:
            run = state_dir() / model.name
            args = dhcp.running_args(dhcp.pid_file(b.name, run))
            if args is None:
                diffs.append(f"dnsmasq for {b.name}: not running")
            elif args != dhcp.dnsmasq_args(b, run):
                diffs.append(f"dnsmasq for {b.name}: runs with other settings than declared")
    return diffs


def _check_rules(model: NetworkModel) -> List[str]:
    text = rules.render(model)
    state = load_state(model.name)
    diffs = []
    if state and state.get("rules") != text:
        diffs.append("rules: the description changed since `net up` (run it again)")
    for family, table in rules.tables_in(text):
        have = rules.list_table(family, table)
        if have is None:
            diffs.append(f"table {family} {table}: missing")
        elif state and state.get("listing", {}).get(f"{family} {table}") != have:
            diffs.append(f"table {family} {table}: changed since `net up`")
    return diffs
