"""Container commands: `lxembed run` (build if needed, run in the foreground) and
`lxembed container-config` (print the LXC config for any LXC version, config.json, or the
libvirt domain XML)."""

from __future__ import annotations

import argparse
import json
import re
import shlex
from pathlib import Path

from ..errors import UserError
from ..log import warn
from .common import add_target_args


def cmd_run(args) -> int:
    from ..config import load_plan
    from ..containers import container_spec
    from ..pipeline import default_output, ensure_built
    from ..runners.containers import run_libvirt, run_lxc, run_oci
    plan = load_plan(args.board, args.recipe)
    spec = container_spec(plan)  # refuse bad input before building anything
    output = Path(args.output) if args.output else default_output(plan)
    output = output.resolve()
    fmt = args.runtime
    ensure_built(plan, output, [fmt], args.mirror, rebuild=args.rebuild)
    if fmt == "lxc":
        return run_lxc(spec.name, output / "lxc" / "config", output / "lxc-run")
    if fmt == "libvirt":
        return run_libvirt(output / "libvirt" / "domain.xml")
    return run_oci(spec.name, output / "oci", shlex.split(args.oci_runtime))


def _version(text: str) -> tuple:
    from ..containers.lxc_keys import OLDEST
    m = re.match(r"^(\d+)(?:\.(\d+))?", text)
    if not m:
        raise UserError(f"--lxc-version {text!r} is not a version (2.0, 5.0)")
    version = int(m.group(1)), int(m.group(2) or 0)
    if version < OLDEST:
        raise UserError(f"--lxc-version {text}: older than any LXC lxembed knows the keys of "
                        "(1.0)")
    return version


def cmd_container_config(args) -> int:
    from ..config import load_plan
    from ..containers import container_spec
    from ..containers.libvirt import libvirt_domain
    from ..containers.lxc_config import lxc_config
    from ..containers.oci import oci_config
    from ..pipeline import default_output
    plan = load_plan(args.board, args.recipe)
    spec = container_spec(plan)
    output = (Path(args.output) if args.output else default_output(plan)).resolve()
    if args.runtime == "oci":
        print(json.dumps(oci_config(spec), indent=2))
        return 0
    if args.runtime == "libvirt":
        rootfs = args.rootfs or str(output / "libvirt" / "rootfs")
        text, notes = libvirt_domain(spec, rootfs, plan.board.name, plan.recipe.name)
        for note in notes:
            warn(note)
        print(text, end="")
        return 0
    if args.lxc_version:
        spec.lxc_version = _version(args.lxc_version)
    rootfs = args.rootfs or str(output / "lxc" / "rootfs")
    print(lxc_config(spec, rootfs, plan.board.name, plan.recipe.name), end="")
    return 0


def _target(p: argparse.ArgumentParser, mirror: bool = False) -> None:
    add_target_args(p, mirror)
    p.add_argument("--output", "-o", help="build directory (default: out/BOARD-RECIPE)")
    p.add_argument(
        "--runtime",
        choices=("lxc", "oci", "libvirt"),
        default="lxc",
        help="LXC, an OCI runtime, or a running libvirtd's LXC driver (default: lxc)",
    )


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "run",
        help="build a container if needed and run it in the foreground (Ctrl-C stops it cleanly)",
    )
    _target(p, mirror=True)
    p.add_argument(
        "--rebuild", action="store_true", help="build even if the output is newer than the recipe"
    )
    p.add_argument(
        "--oci-runtime",
        default="crun",
        help="OCI runtime command, split like a shell would (crun, runc)",
    )
    p.set_defaults(func=cmd_run)
    p = subparsers.add_parser(
        "container-config",
        help="print a container's LXC config (for any LXC version), OCI config.json or libvirt "
        "domain XML",
    )
    _target(p)
    p.add_argument(
        "--lxc-version",
        help="write keys for this LXC version; below 3.0 the "
        "legacy keys (default: the recipe's lxc_version)",
    )
    p.add_argument("--rootfs", help="rootfs path the LXC config or libvirt domain names "
                   "(default: OUTPUT/lxc/rootfs, OUTPUT/libvirt/rootfs)")
    p.set_defaults(func=cmd_container_config)
