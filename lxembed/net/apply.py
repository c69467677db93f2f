"""`net up` and `net down`: links through pyroute2, one nft transaction, dnsmasq; all journaled.

`up` is idempotent (what is already as declared is left alone) and transactional (a failure
removes what this run made and names what failed); `down` undoes exactly the recorded journal.

Crash safety: every change is announced in the write-ahead journal (journal.py) before it is
made, and the journal becomes part of the state file only when `up` succeeds. After a run killed
at any point, the next `up` or `down` (each under the description's lock) first checks which
announced objects exist (`_recover`): those are the interrupted run's, so `up` takes them over
and finishes the run (or, failing, removes them with its own), and `down` removes them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from .. import log
from ..errors import UserError
from . import dhcp, rules
from .journal import Journal, entries_of, net_lock, read_records, unique
from .links import LinkSetup, Rtnl, kind_of, netns_exists, netns_usable, remove_netns
from .model import NetworkModel
from .state import forget_state, journal_file, load_state, run_dir, save_state

IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"


def net_up(model: NetworkModel) -> Dict[str, Any]:
    """Make the host match the description; returns {created, changed, rules, seconds}."""
    with net_lock(model.name, "up"):  # one up or down at a time; a second one waits
        return _net_up(model)


def _net_up(model: NetworkModel) -> Dict[str, Any]:
    start = time.monotonic()
    text = rules.render(model)
    rules.check(text, str(model.path))
    previous = load_state(model.name)
    journal = Journal(journal_file(model.name),
                      {"run": "up", "pid": os.getpid(), "file": str(Path(model.path).resolve())},
                      _recover(entries_of(read_records(journal_file(model.name)))))
    # An interrupted run's objects are owned like the recorded ones: adjusted, never refused.
    owned = previous.get("created", []) + journal.recovered
    setup: Optional[LinkSetup] = None
    try:
        setup = LinkSetup(model, journal, owned)
        setup.run()
        setup.close()
        rules_changed = _apply_rules(model, text, previous, journal)
        _forwarding(model, journal)
        _dnsmasq(model, owned, journal)
    except BaseException as err:  # Ctrl-C too: nothing this run made may be left unrecorded
        if setup is not None:
            setup.close()
        problems = _rollback(journal, previous)
        if not isinstance(err, (UserError, OSError)):
            raise
        made = ", ".join(_labels(journal.entries)) or "nothing"
        left = f"; could not remove: {'; '.join(problems)}" if problems else ""
        raise UserError(f"{model.path}: net up failed: {err} (removed what this run made: "
                        f"{made}{left})", hint=getattr(err, "hint", "")) from None
    # What an earlier `up` made that the description no longer declares goes now, after
    # everything declared is in place (a failure above must not have removed it already).
    stale = _stale(model, owned)
    problems = undo(stale) if stale else []
    created = [e for e in previous.get("created", []) + journal.entries
               if problems or e not in stale]
    state = {"name": model.name, "file": str(Path(model.path).resolve()),
             "created": unique([e for e in created if _meaningful(e)]), "rules": text,
             "tables": rules.tables_in(text),
             "listing": {f"{f} {t}": rules.list_table(f, t) for f, t in rules.tables_in(text)}}
    save_state(model.name, state)  # durable before the journal goes: see save_state
    journal.remove()
    if problems:
        raise UserError(f"{model.path}: up, removing what is no longer declared: "
                        f"{'; '.join(problems)}", hint="it stays recorded: `down` retries")
    return {"created": _labels(journal.made), "recovered": _labels(journal.recovered),
            "removed": _labels(stale), "rules": rules.count_rules(text),
            "rules_changed": rules_changed, "seconds": round(time.monotonic() - start, 4)}


def _meaningful(e: Dict[str, Any]) -> bool:
    """A `tables` record of a transaction that made no new table has nothing to undo."""
    return not (e["kind"] == "tables" and not e["tables"])


def _labels(entries: List[Dict[str, Any]]) -> List[str]:
    return [f"{e['kind']} {e['name']}" for e in unique(entries) if _meaningful(e)]


def _rollback(journal: Journal, previous: Dict[str, Any]) -> List[str]:
    """Undo what this run (and the interrupted run it took over) made; the previous rules come
    back if a transaction may have replaced them. The journal stays if something could not be
    undone, so `down` (or the next `up`) still knows it."""
    problems = undo(journal.entries)
    if any(e["kind"] == "tables" for e in journal.entries) and previous.get("rules"):
        try:
            rules.nft([], previous["rules"], "restoring the previous rules")
        except UserError as err:
            problems.append(str(err))
    if problems:
        journal.close()
    else:
        journal.remove()
    return problems


def _recover(entries: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The entries of an interrupted run whose objects exist: those it made.

    Only a link or namespace the journal announced, a table and a dnsmasq can be "there or
    not"; each was announced only when it was missing, so finding it means that run made it.
    A link must also have the announced type and MAC: a foreign link that took the name of one
    never made stays foreign. The other entries restore a recorded previous value (an address
    removed, a master, a link down, a sysctl): harmless when the change was never made."""
    if not entries:
        return []
    rtnl, links, out = Rtnl(), {}, []
    tables: Optional[List[List[str]]] = None

    def find_link(ns: Optional[str], name: str):
        if ns not in links:
            try:
                links[ns] = rtnl.links(ns) if ns is None or netns_usable(ns) else {}
            except Exception:  # a namespace that cannot be entered holds nothing of ours
                links[ns] = {}
        return links[ns].get(name)

    try:
        for e in entries:
            kind = e["kind"]
            if kind == "netns":
                if netns_usable(e["name"]):
                    out.append(e)
                elif netns_exists(e["name"]):  # its creator died between file and mount
                    remove_netns(e["name"])
            elif kind == "link":
                msg = find_link(e.get("netns"), e["name"])
                if msg is not None and (kind_of(msg) or "device") == e.get("type") and \
                        e.get("mac") in (None, msg.get_attr("IFLA_ADDRESS")):
                    out.append(e)
            elif kind == "tables":
                tables = rules.existing_tables() if tables is None else tables
                out.append({**e, "tables": [t for t in e["tables"] if t in tables]})
            elif kind == "dnsmasq":
                if _recover_dnsmasq(Path(e["pidfile"])):
                    out.append(e)
            else:
                out.append(e)
    finally:
        rtnl.close()  # a socket inside a namespace would keep it alive
    return unique(out)


def _recover_dnsmasq(pidfile: Path) -> bool:
    """A dnsmasq of this pid file runs; its pid file is rewritten if it lost it (the run was
    killed while dnsmasq started). A pid file whose pid now belongs to another process is
    not a dnsmasq of ours."""
    pids = dhcp.find(pidfile)
    if pids and dhcp.running_pid(pidfile) not in pids:
        pidfile.write_text(f"{pids[0]}\n")
    return bool(pids)


def _stale(model: NetworkModel, owned: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Recorded objects the description no longer declares."""
    links = {(None, b.name) for b in model.bridges} | {(None, v.name) for v in model.veths}
    links |= {(None, p.name) for p in model.ports if p.created_by == "lxembed"}
    links |= {(None, v.name) for v in model.vlans}
    links |= {(m.netns, m.name) for m in model.macvlans}
    namespaces = set(model.namespaces())
    addresses = {(b.name, a) for b in model.bridges for a in b.addresses}
    dhcp = {b.name for b in model.bridges if b.dhcp}
    phys = {p.name for p in model.phys}

    def declared(e: Dict[str, Any]) -> bool:
        kind, name, ns = e["kind"], e["name"], e.get("netns")
        if kind == "link":
            return (ns, name) in links
        if kind == "netns":
            return name in namespaces
        if kind == "address":
            return (name, e["address"]) in addresses
        if kind == "dnsmasq":
            return name in dhcp
        if kind == "sysctl":
            return bool(model.nat)
        if kind == "up" and ns:
            return ns in namespaces
        if kind in ("master", "moved", "up"):
            return name in phys
        return True  # tables: replaced or deleted by _apply_rules

    return [e for e in owned if not declared(e)]


def _apply_rules(model: NetworkModel, text: str, previous: Dict[str, Any],
                 journal: Journal) -> bool:
    tables = rules.tables_in(text)
    if text and text == previous.get("rules"):
        listing = {f"{f} {t}": rules.list_table(f, t) for f, t in tables}
        if listing == previous.get("listing"):
            return False  # in force, byte for byte: re-applying would renumber the handles
    existing = rules.existing_tables()  # names only: cheaper than listing 1000 rules
    stale = [t for t in previous.get("tables", []) if t not in tables]
    if text or stale:
        # Recorded even when every table exists: it also says "the rules may have been
        # replaced", so a rollback puts the previous ones back.
        with journal.change("tables", "nft", tables=[t for t in tables if t not in existing]):
            if text:
                rules.nft([], text, f"{model.path}: applying the rules")  # all or nothing
    rules.delete_tables(stale)  # after: the state file still records them if this is cut
    return True


def _forwarding(model: NetworkModel, journal: Journal) -> None:
    """NAT needs IPv4 forwarding; the old value is recorded and restored by `down`."""
    if not model.nat:
        return
    with open(IP_FORWARD) as fh:
        value = fh.read().strip()
    if value != "1":
        with journal.change("sysctl", IP_FORWARD, previous=value), open(IP_FORWARD, "w") as fh:
            fh.write("1\n")


def _dnsmasq(model: NetworkModel, owned: List[Dict[str, Any]], journal: Journal) -> None:
    for b in model.bridges:
        if not b.dhcp:
            continue
        run = run_dir(model.name)
        pidfile = dhcp.pid_file(b.name, run)
        current = dhcp.running_args(pidfile)
        if current == dhcp.dnsmasq_args(b, run):
            continue
        known = any(e["kind"] == "dnsmasq" and e["name"] == b.name for e in owned)
        with contextlib.nullcontext() if known else journal.change("dnsmasq", b.name,
                                                                   pidfile=str(pidfile)):
            if current is not None:
                dhcp.stop(pidfile)
            dhcp.start(b, run)


def undo(entries: List[Dict[str, Any]]) -> List[str]:
    """Reverse a journal; returns what could not be undone (never raises for one object)."""
    rtnl, problems = Rtnl(), []
    host_links = [e["name"] for e in entries if e["kind"] == "link" and not e.get("netns")]
    for e in reversed(entries):
        if e["kind"] == "netns" or (e["kind"] == "link" and not e.get("netns")):
            continue
        try:
            _undo_one(e, rtnl)
        except Exception as err:  # keep going: one stuck object must not strand the others
            problems.append(f"{e['kind']} {e['name']}: {err}")
    problems += _delete_links(rtnl, host_links)
    rtnl.close()  # a socket inside a namespace would keep it alive
    for e in reversed([e for e in entries if e["kind"] == "netns"]):
        try:
            remove_netns(e["name"])
        except OSError as err:
            problems.append(f"netns {e['name']}: {err.strerror or err}")
    return problems


def _delete_links(rtnl: Rtnl, names: List[str]) -> List[str]:
    """Delete host links in one netlink request: each veth deleted alone waits for an RCU
    grace period (~13 ms here); a link group goes in one batch (100 ports: 2.6 s -> 0.1 s)."""
    links = rtnl.links()
    present = [links[n] for n in names if n in links]
    if not present:
        return []
    groups = {m.get_attr("IFLA_GROUP") for m in links.values()}
    group = next(g for g in iter(lambda: random.randrange(1 << 20, 1 << 31), None)
                 if g not in groups)  # a group no link is in: only ours get deleted
    ipr = rtnl()
    try:
        for m in present:
            ipr.link("set", index=m["index"], group=group)
        ipr.link("del", group=group)
        return []
    except rtnl.NetlinkError:
        pass  # fall back to one request per link
    problems = []
    for m in present:
        try:
            if rtnl.index(m.get_attr("IFLA_IFNAME")) is not None:
                ipr.link("del", index=m["index"])
        except rtnl.NetlinkError as err:
            problems.append(f"link {m.get_attr('IFLA_IFNAME')}: {os.strerror(err.code)}")
    return problems


def _undo_one(e: Dict[str, Any], rtnl: Rtnl) -> None:
    kind, name, ns = e["kind"], e["name"], e.get("netns")
    if ns and kind in ("link", "address", "up", "moved") and not netns_usable(ns):
        return  # gone (with what was in it), or never more than a file: removed with netns
    if kind == "link":
        index = rtnl.index(name, ns)
        if index is not None:
            rtnl(ns).link("del", index=index)
    elif kind == "address":
        iface = ipaddress.ip_interface(e["address"])
        index = rtnl.index(name, ns)
        if index is not None:
            rtnl(ns).addr("del", index=index, address=str(iface.ip),
                          prefixlen=iface.network.prefixlen)
    elif kind == "master":
        index = rtnl.index(name)
        previous = rtnl.index(e["previous"]) if e.get("previous") else 0
        if index is not None:
            rtnl().link("set", index=index, master=previous or 0)
    elif kind == "up":
        index = rtnl.index(name, ns)
        if index is not None:
            rtnl(ns).link("set", index=index, state="down")
    elif kind == "moved":
        index = rtnl.index(name, ns)
        if index is not None:
            fd = os.open("/proc/self/ns/net", os.O_RDONLY)
            try:
                rtnl(ns).link("set", index=index, net_ns_fd=fd)
            finally:
                os.close(fd)
    elif kind == "sysctl":
        with open(name, "w") as fh:
            fh.write(e["previous"] + "\n")
    elif kind == "tables":
        rules.delete_tables(e["tables"])
    elif kind == "dnsmasq":
        dhcp.stop(Path(e["pidfile"]))


def net_down(name: str) -> Dict[str, Any]:
    """Remove what `up` recorded for description NAME; nothing else."""
    with net_lock(name, "down"):
        return _net_down(name)


def _net_down(name: str) -> Dict[str, Any]:
    start = time.monotonic()
    state = load_state(name)
    interrupted = journal_file(name).exists()
    if not state and not interrupted:
        log.info(f"network {name!r} is not up (no recorded state): nothing to remove")
        return {"removed": [], "seconds": 0.0}
    # An interrupted `up`: what it announced and made goes too; what it never made is skipped.
    entries = unique(state.get("created", []) +
                     _recover(entries_of(read_records(journal_file(name)))))
    problems = undo(entries)
    if problems:
        raise UserError(f"net down {name}: could not remove: {'; '.join(problems)}",
                        hint="the recorded state is kept; fix the cause and run down again")
    forget_state(name)
    return {"removed": _labels(entries), "interrupted": interrupted,
            "seconds": round(time.monotonic() - start, 4)}
