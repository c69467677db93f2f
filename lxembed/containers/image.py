"""What an OCI image says about a container: its name (a checked image reference), platform
and config (the init as Cmd, the environment, the stop signal); refused for what an image cannot
carry. The bytes are lxembed.writers.oci_image's."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Tuple

from ..config import Plan
from ..errors import UserError
from .oci import oci_config
from .spec import ContainerSpec

# distribution/reference's grammar (what docker, podman and skopeo parse), without digests:
# lxembed names an image it makes, it does not pin one.
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*(?::[0-9]+)?"
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REFERENCE = re.compile(
    rf"^(?P<name>(?:{_DOMAIN}/)?{_PATH_PART}(?:/{_PATH_PART})*)(?::(?P<tag>[\w][\w.-]{{0,127}}))?$"
)
NAME_MAX = 255  # distribution/reference: longer names are refused by registries and podman


def _image_setting(plan: Plan):
    return (plan.recipe.settings.get("container") or {}).get("image")


def image_reference(plan: Plan, spec: ContainerSpec) -> str:
    """The image's full name with its tag: [container] image, else localhost/lxembed/NAME.

    "localhost/" keeps podman and docker from taking a short name for a Docker Hub image.
    """
    value = _image_setting(plan)
    key = "image"
    if value is None:  # a container name may hold what a reference may not ("a..b", "_x")
        value, key = f"localhost/lxembed/{spec.name.lower()}:latest", "name"
    m = _REFERENCE.match(value)
    if not m or len(m.group("name")) > NAME_MAX:
        raise UserError(
            f"{spec.where('container', key)}: image {value!r} is not an image reference",
            hint="set [container] image: lower-case path components, an optional registry "
            "and :tag, e.g. registry.example/team/router:1.0",
        )
    return value if m.group("tag") else value + ":latest"


def check_oci_image(plan: Plan, spec: ContainerSpec) -> str:
    """Refuse what an OCI image cannot carry, before anything is built; the reference."""
    if spec.mode == "bind-host":
        raise UserError(
            f"{spec.where('container', 'mode')}: an OCI image of a bind-host container would "
            f"need its host's /usr: it carries no files of its own",
            hint='use mode = "self-contained" for oci-image and oci-archive',
        )
    if not spec.arch.oci:
        raise UserError(
            f"{plan.board.path}: architecture {spec.arch.debian} has no OCI (GOARCH) name: "
            f"no OCI image for it"
        )
    return image_reference(plan, spec)


def platform(spec: ContainerSpec) -> dict:
    out = {"architecture": spec.arch.oci, "os": "linux"}
    if spec.arch.oci_variant:
        out["variant"] = spec.arch.oci_variant
    return out


def image_config(plan: Plan, spec: ContainerSpec) -> Tuple[dict, dict]:
    """(the image config without rootfs, its platform). The runtime bundle's process is the
    source, so `podman run IMAGE` starts what `lxembed run --runtime oci` starts."""
    process = oci_config(spec)["process"]
    created = datetime.fromtimestamp(plan.epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    labels = {
        "org.lxembed.board": plan.board.name,
        "org.lxembed.recipe": plan.recipe.name,
        "org.lxembed.container": spec.name,
        "org.lxembed.init": spec.init,
    }
    config = {
        # Cmd, not Entrypoint: `podman run IMAGE sh` replaces the init instead of passing it
        # an argument.
        "Cmd": process["args"],
        "Env": process["env"],
        "WorkingDir": "/",
        "StopSignal": spec.signals["stop"],
        "Labels": labels,
    }
    doc = {
        "created": created,
        **platform(spec),
        "config": config,
        "history": [{"created": created,
                     "created_by": f"lxembed build -b {plan.board.name} -r {plan.recipe.name}"}],
    }
    return doc, platform(spec)
