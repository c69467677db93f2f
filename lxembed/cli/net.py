"""`lxembed net up|down|show|check|host-config|lxc-hooks FILE` and `net-docs`: host networking."""

from __future__ import annotations

import json
from pathlib import Path


def _model(args):
    from ..net.model import load_description
    return load_description(args.file)


def cmd_up(args) -> int:
    from ..net.apply import net_up
    result = net_up(_model(args))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        made = ", ".join(result["created"]) or "nothing new"
        gone = f"; removed {', '.join(result['removed'])}" if result["removed"] else ""
        took = (f"; took over from an interrupted run: {', '.join(result['recovered'])}"
                if result["recovered"] else "")
        print(f"up in {result['seconds']:.3f} s: created {made}{took}{gone}; {result['rules']} "
              f"rules{'' if result['rules_changed'] else ' (unchanged)'}")
    return 0


def cmd_down(args) -> int:
    from ..net.apply import net_down
    result = net_down(_model(args).name)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"down in {result['seconds']:.3f} s: removed "
              f"{', '.join(result['removed']) or 'nothing'}"
              f"{' (with what an interrupted `up` had made)' if result.get('interrupted') else ''}")
    return 0


def cmd_show(args) -> int:
    from ..net import rules, status
    model = _model(args)
    if args.rules:
        text = rules.render(model)
        rules.check(text, str(model.path))
        print(text, end="")
        return 0
    info = status.show(model)
    print(json.dumps(info, indent=2) if args.json else status.format_show(info, args.file))
    return 0


def cmd_check(args) -> int:
    from ..net import rules, status
    model = _model(args)
    rules.check(rules.render(model), str(model.path))
    diffs = status.check(model)
    if args.json:
        print(json.dumps({"name": model.name, "differences": diffs}, indent=2))
    elif diffs:
        print(f"{model.path}: the host differs from the description:")
        print("\n".join(f"  {d}" for d in diffs))
    else:
        print(f"{model.path}: in force")
    return 1 if diffs else 0


def cmd_host_config(args) -> int:
    from ..net.host_config import host_config_files, write_host_config
    model = _model(args)
    if args.root:
        for path in write_host_config(model, Path(args.root)):
            print(path)
        return 0
    for rel, text in host_config_files(model).items():
        print(f"# /{rel}\n{text}")
    return 0


def cmd_lxc_hooks(args) -> int:
    from ..net.hooks import lxc_hook_scripts, write_lxc_hooks
    model = _model(args)
    if args.dir:
        for key, path in write_lxc_hooks(model, args.port, Path(args.dir)).items():
            print(f"{key} = {path.resolve()}")
        return 0
    start, stop = lxc_hook_scripts(model, args.port)
    print(start + "\n" + stop, end="")
    return 0


def cmd_net_docs(args) -> int:
    from ..net.docs import reference
    print(reference(), end="")
    return 0


def register(subparsers) -> None:
    net = subparsers.add_parser("net", help="host networking from a description: bridges, "
                                "veths, macvlan shims, anti-spoofing, firewall, DHCP")
    sub = net.add_subparsers(dest="net_command", required=True)
    for name, func, text in (
        ("up", cmd_up, "create what the description declares (idempotent, transactional, "
         "crash-safe: finishes a run that was killed)"),
        ("down", cmd_down, "remove exactly what `up` created (a killed run's too)"),
        ("show", cmd_show, "print the links, addresses, rules and leases in force"),
        ("check", cmd_check, "check the rules with nft -c; exit 1 listing how the host differs"),
        ("host-config", cmd_host_config, "udev, NetworkManager and networkd files that keep "
         "the host's network managers off the description's interfaces"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("file", help="network description (TOML), or a recipe with "
                       "[host_network]")
        p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(func=func)
        if name == "show":
            p.add_argument("--rules", action="store_true",
                           help="print the rendered nftables rules (checked with nft -c)")
        if name == "host-config":
            p.add_argument("--root", help="write the files under this directory (/ to install)")
    p = sub.add_parser("lxc-hooks", help="the lxc.hook.start-host / post-stop scripts (ip and "
                       "nft only) for a port LXC makes (created_by = \"lxc\")")
    p.add_argument("file", help="network description (TOML), or a recipe with [host_network]")
    p.add_argument("port", help="the port (its name is lxc.net.N.veth.pair)")
    p.add_argument("--dir", help="write both scripts here and print the LXC config lines")
    p.set_defaults(func=cmd_lxc_hooks)
    p = subparsers.add_parser("net-docs", help="print the network description key reference")
    p.set_defaults(func=cmd_net_docs)

