"""Containers from a recipe's [container] table: LXC configs (modern, and legacy by version), OCI
bundles, libvirt LXC domains, and the container's own rootfs tree, all from one ContainerSpec.

spec.py resolves and checks the table (against a root: the build host's, or a device tree's),
host_layout.py probes that root, rootfs.py makes the container tree from an image tree,
lxc_config.py/lxc_keys.py, oci.py and libvirt.py say it for each runtime, bundle.py is the
build step.
"""

from .spec import ContainerSpec, Mount, container_spec, is_container_recipe

__all__ = ["ContainerSpec", "Mount", "container_spec", "is_container_recipe"]
