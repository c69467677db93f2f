"""The whole build: plan -> tree -> written artifacts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import List, Optional

from .config import Plan
from .containers import container_spec
from .log import step
from .rootfs.build import build_tree
from .rootfs.modules import kernel_modules_tree
from .writers import Artifact, write_formats
from .writers.output import check_formats

DEFAULT_FORMATS = ("cpio.zst",)
CONTAINER_FORMATS = {"lxc", "oci"}


def default_output(plan: Plan) -> Path:
    return Path("out") / f"{plan.board.name}-{plan.recipe.name}"


def build_image(plan: Plan, output: Optional[Path] = None, formats: Sequence[str] = DEFAULT_FORMATS,
                mirror: Optional[str] = None) -> List[Artifact]:
    check_formats(formats)
    if CONTAINER_FORMATS & set(formats):
        container_spec(plan)  # every container error before anything is fetched or written
    tree = build_tree(plan, mirror)
    meta = {"board": plan.board.name, "recipe": plan.recipe.name, "arch": plan.arch.debian,
            "suite": plan.board.suite, "source_date_epoch": plan.epoch}
    output = Path(output or default_output(plan))
    image_formats = [f for f in formats if f not in CONTAINER_FORMATS]
    # A qemu board's kernel modules: a second segment that boots appended to the rootfs.
    modules = kernel_modules_tree(plan, mirror) if plan.board.qemu and image_formats else None
    with step("write " + ",".join(formats)):
        artifacts = write_formats(tree, output, formats, plan, meta)
        if modules is not None:
            artifacts += write_formats(modules, output, image_formats, plan, meta, "modules")
    return artifacts
