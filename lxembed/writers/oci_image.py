"""An OCI image from a tree: one gzip layer, its config and manifest, as an image layout
directory (`oci-image`) or one tar (`oci-archive`) that also carries a docker `manifest.json`.

The image config document comes made (lxembed.containers.image): this only serialises the tree
as a layer and lays the blobs out. Every byte is fixed by the tree and the documents: the layer
is the tree's own tar (its owners, modes and mtimes), gzip has no name and mtime 0, JSON has
sorted keys, and the archive's own entries are sorted, owned by 0:0 and dated `epoch`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Dict, List

from ..compression import compressed_memo
from ..tree import RootfsTree
from .output import Artifact, replace_dir_atomic
from .tar import write_tar

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
ANNOTATION_REF = "org.opencontainers.image.ref.name"
LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
GZIP_LEVEL = 6


def _json(doc) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _descriptor(media: str, data: bytes) -> dict:
    return {"mediaType": media, "digest": _sha(data), "size": len(data)}


@dataclass
class OciImage:
    """The blobs of one image, in memory, and the two documents that point at them."""

    blobs: Dict[str, bytes]  # "sha256:HEX" -> bytes
    index: bytes  # index.json
    docker_manifest: bytes  # manifest.json of `docker save` (docker-archive, `docker load`)
    manifest_digest: str


def oci_image(tree: RootfsTree, config: dict, ref: str, platform: dict) -> OciImage:
    """Make the layer from `tree`, complete `config` (its rootfs.diff_ids) and point at it all.

    `ref` is the full image name (registry/path:tag): the index's ref.name annotation and the
    docker manifest's RepoTags; `platform` is {"architecture", "os"[, "variant"]}.
    """
    raw = io.BytesIO()
    write_tar(tree, raw)
    layer_tar = raw.getvalue()
    layer = _gzip_cached(layer_tar)
    config = dict(config, rootfs={"type": "layers", "diff_ids": [_sha(layer_tar)]})
    config_blob = _json(config)
    manifest = _json({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": _descriptor(MEDIA_CONFIG, config_blob),
        "layers": [_descriptor(MEDIA_LAYER_GZIP, layer)],
    })
    index = _json({
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [dict(_descriptor(MEDIA_MANIFEST, manifest), platform=platform,
                           annotations={ANNOTATION_REF: ref})],
    })
    blobs = {_sha(b): b for b in (layer, config_blob, manifest)}
    docker = _json([{
        "Config": _blob_path(_sha(config_blob)),
        "RepoTags": [ref],
        "Layers": [_blob_path(_sha(layer))],
    }])
    return OciImage(blobs, index, docker, _sha(manifest))


def _gzip_cached(raw: bytes) -> bytes:
    """gzip at its default level 6 (level 9 costs twice the time for 0.4 % here), remembered
    by content hash like the zstd images: an unchanged layer is not compressed again.

    No file name and mtime 0 in the header: the output depends only on the input and the level,
    so the memo cannot change what a build produces.
    """
    def compress(data: bytes) -> bytes:
        gz = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=gz, mtime=0,
                           compresslevel=GZIP_LEVEL) as out:
            out.write(data)
        return gz.getvalue()

    return compressed_memo(raw, f"gzip{GZIP_LEVEL}", "gz", compress)


def _blob_path(digest: str) -> str:
    return "blobs/" + digest.replace(":", "/")


def _files(image: OciImage, docker: bool) -> List[tuple]:
    """(relative path, bytes) of the layout, sorted; with `docker`, plus manifest.json."""
    files = [("oci-layout", LAYOUT), ("index.json", image.index)]
    files += [(_blob_path(d), b) for d, b in image.blobs.items()]
    if docker:
        files.append(("manifest.json", image.docker_manifest))
    return sorted(files)


def write_oci_layout(image: OciImage, dest: Path, fmt: str = "oci-image") -> Artifact:
    """DEST/ as an OCI image layout, swapped in whole. Its sha256 is the manifest digest's:
    the one identifier that pins every blob."""

    def fill(tmp: Path) -> None:
        for rel, data in _files(image, docker=False):
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    replace_dir_atomic(dest, fill)
    size = sum(len(b) for b in image.blobs.values()) + len(image.index) + len(LAYOUT)
    return Artifact(fmt, str(dest), size, image.manifest_digest.partition(":")[2])


def write_oci_archive(image: OciImage, fh: BinaryIO, epoch: int) -> None:
    """One tar: the layout plus a docker manifest.json over the same blobs, so `podman load`,
    `docker load`, `skopeo ... oci-archive:` and `docker-archive:` all read it."""
    dirs = {"blobs", "blobs/sha256"}
    entries = sorted([(d, None) for d in dirs] + _files(image, docker=True))
    with tarfile.open(fileobj=fh, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for rel, data in entries:
            info = tarfile.TarInfo(rel)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = epoch
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.mode, info.size = 0o644, len(data)
                tar.addfile(info, io.BytesIO(data))
