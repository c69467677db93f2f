"""What a FIT and an SWUpdate bundle hold, for `lxembed inspect`.

A FIT is read by u-boot-tools' own `dumpimage -l` (its images, hashes, configurations and
signatures), and each image's sha256 is checked against the bytes `dumpimage -p` extracts:
Debian's u-boot-tools has no fit_check_sign, so the signature itself is only listed (U-Boot
checks it at boot with the key in its control device tree).

A .swu is read with the swu writer's read_bundle; its sw-description is lxembed's own
(writers/swu.py), read field by field. The pinned sha256 is checked against the image's bytes,
and the CMS signature against sw-description with `openssl cms -verify -noverify`: the
signature matches the text and was made by the certificate it carries, whose subject is
shown. Whether that certificate is the one a device trusts is the device's check
(`swupdate -k`), not this one.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

from ..errors import UserError
from ..paths import file_sha256
from ..writers.swu import read_bundle

FDT_MAGIC = b"\xd0\x0d\xfe\xed"
CPIO_MAGICS = (b"070701", b"070702")


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise UserError(f"inspect: {name} is not installed", hint=f"apt-get install {package}")
    return path


# -- FIT -------------------------------------------------------------------------------------------

_SECTION = re.compile(r"^ (Image|Configuration) (\d+) \(([^)]*)\)$")
_FIELD = re.compile(r"^\s+([A-Za-z][A-Za-z ]*?):\s+(.*)$")


def parse_dumpimage(text: str) -> Dict:
    """`dumpimage -l`'s listing of a FIT as a dict: description, images, configurations."""
    fit: Dict = {"description": "", "images": [], "configurations": [], "default": ""}
    current: Optional[Dict] = None
    for line in text.splitlines():
        if line.startswith("FIT description:"):
            fit["description"] = line.split(":", 1)[1].strip()
            continue
        if line.startswith(" Default Configuration:"):
            fit["default"] = line.split(":", 1)[1].strip().strip("'")
            continue
        section = _SECTION.match(line)
        if section:
            kind, index, name = section.groups()
            current = {"index": int(index), "name": name}
            fit["images" if kind == "Image" else "configurations"].append(current)
            continue
        field = _FIELD.match(line)
        if field and current is not None:
            key = field.group(1).strip().lower().replace(" ", "_")
            current[key] = field.group(2).strip()
    return fit


def inspect_fit(path: Path, check_hashes: bool = True) -> Dict:
    """A FIT's contents; each image's sha256 checked unless `check_hashes` is false."""
    with open(path, "rb") as fh:
        if fh.read(4) != FDT_MAGIC:
            raise UserError(f"{path}: not a FIT (no device tree header)")
    dumpimage = _tool("dumpimage", "u-boot-tools")
    listed = subprocess.run([dumpimage, "-l", str(path)], capture_output=True, text=True)
    fit = parse_dumpimage(listed.stdout)
    if listed.returncode != 0 or not fit["images"]:
        raise UserError(f"{path}: not a FIT (a device tree without images)" if
                        listed.returncode == 0 else f"{path}: dumpimage cannot read it: "
                        f"{(listed.stderr.strip().splitlines() or ['damaged'])[-1]}")
    with tempfile.TemporaryDirectory(prefix="lxembed-inspect-") as tmp:
        for image in fit["images"]:
            image["bytes"] = _data_size(image.get("data_size", ""))
            if not check_hashes or image.get("hash_algo") != "sha256":
                image["hash_ok"] = None
                continue
            out = Path(tmp, f"image{image['index']}")
            extracted = subprocess.run([dumpimage, "-T", "flat_dt", "-p", str(image["index"]),
                                        "-o", str(out), str(path)], capture_output=True)
            image["hash_ok"] = (extracted.returncode == 0 and out.exists()
                                and file_sha256(out) == image.get("hash_value"))
            out.unlink(missing_ok=True)
    for conf in fit["configurations"]:
        conf["signed"] = "sign_algo" in conf
    fit["signed"] = bool(fit["configurations"]) and all(c["signed"]
                                                        for c in fit["configurations"])
    fit["hashes_ok"] = all(i["hash_ok"] is not False for i in fit["images"])
    return fit


def _data_size(text: str) -> int:
    match = re.match(r"(\d+) Bytes", text)
    return int(match.group(1)) if match else 0


def fit_lines(fit: Dict, indent: str = "") -> List[str]:
    lines = [f"{indent}FIT: {fit['description'] or '(no description)'}"]
    for image in fit["images"]:
        check = {True: "ok", False: "MISMATCH", None: "not checked"}[image["hash_ok"]]
        value = image.get("hash_value", "")
        lines.append(f"{indent}  image {image['name']:10} {image.get('type', '?'):14} "
                     f"{_mib(image['bytes']):>10}  {image.get('hash_algo', 'no hash')} "
                     f"{value[:16]}{'...' if value else ''} {check if value else ''}".rstrip())
    for conf in fit["configurations"]:
        parts = [p for p in (conf.get("kernel"), conf.get("init_ramdisk"), conf.get("fdt"))
                 if p]
        sign = f"signed {conf['sign_algo']}" if conf["signed"] else "NOT signed"
        lines.append(f"{indent}  config {conf['name']:9} {' + '.join(parts):27} {sign}")
    return lines


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n / 1024:.1f} KiB"


# -- SWUpdate bundle -------------------------------------------------------------------------------

def is_swu(path: Path) -> bool:
    """A cpio archive whose first file is sw-description."""
    with open(path, "rb") as fh:
        header = fh.read(110 + 15)
    if len(header) < 125 or header[:6] not in CPIO_MAGICS:
        return False
    return header[110:125] == b"sw-description\0"


def _offsets(files: List[tuple]) -> Dict[str, tuple]:
    """Where each file's data is in the archive (newc: 110-byte header, name, 4-byte pads)."""
    at, where = 0, {}
    for name, size in files:
        at += 110 + len(name) + 1
        at += -at % 4
        where[name] = (at, size)
        at += size + (-size % 4)
    return where


def _string(text: str, key: str) -> str:
    match = re.search(rf"\b{re.escape(key)}\s*=\s*\"((?:[^\"\\]|\\.)*)\"", text)
    return match.group(1) if match else ""


def parse_description(text: str) -> Dict:
    """The fields of lxembed's sw-description (writers/swu.py writes it)."""
    board = re.search(r"^\t([A-Za-z*][-A-Za-z0-9_*]*):\s*\{\s*\n\s*hardware-compatibility:"
                      r"\s*\[([^\]]*)\]", text, re.M)
    software_set = re.search(r"^\t\t([A-Za-z][-A-Za-z0-9_]*):\s*\{", text, re.M)
    selections = []
    for mode in re.finditer(r"^\t\t\t([A-Za-z*][-A-Za-z0-9_*]*):\s*\{(.*?)^\t\t\t\};", text,
                            re.M | re.S):
        body = mode.group(2)
        env = dict(re.findall(r"name = \"([^\"]*)\"; value = \"([^\"]*)\";", body))
        selections.append({
            "selection": f"{software_set.group(1) if software_set else '?'},{mode.group(1)}",
            "filename": _string(body, "filename"), "device": _string(body, "device"),
            "compressed": _string(body, "compressed"), "sha256": _string(body, "sha256"),
            "bootenv": env})
    return {"version": _string(text, "version"), "description": _string(text, "description"),
            "board": board.group(1) if board else "",
            "hardware": re.findall(r"\"([^\"]*)\"", board.group(2)) if board else [],
            "selections": selections}


def inspect_swu(path: Path) -> Dict:
    try:
        description, files = read_bundle(path)
    except UserError:  # it starts as a bundle does: what follows is cut short or changed
        raise UserError(f"{path}: a damaged SWUpdate bundle (cut short, or its cpio headers "
                        "changed)") from None
    info = parse_description(description)
    if not info["version"] or not info["selections"]:
        raise UserError(f"{path}: an SWUpdate bundle, but not one lxembed wrote (its "
                        "sw-description has no version or no selections)")
    where = _offsets(files)
    size = path.stat().st_size
    images = []
    with open(path, "rb") as fh:
        for name, (offset, length) in where.items():
            if name.startswith("sw-description"):
                continue
            pinned = {s["sha256"] for s in info["selections"] if s["filename"] == name}
            fh.seek(offset)
            digest = hashlib.sha256()
            left = length
            while left:
                chunk = fh.read(min(left, 1 << 20))
                if not chunk:
                    raise UserError(f"{path}: damaged: {name} ends past the end of the file")
                digest.update(chunk)
                left -= len(chunk)
            images.append({"name": name, "bytes": length, "sha256": digest.hexdigest(),
                           "matches": digest.hexdigest() in pinned})
        sig = where.get("sw-description.sig")
        signature = _signature(fh, where["sw-description"], sig) if sig else None
    found = [f"{i['name']} is not the image sw-description pins (damaged)"
             for i in images if not i["matches"]]
    if signature is None:
        found.append("no signature: a device refuses it")
    elif not signature["matches"]:
        found.append("the signature does not match sw-description (changed after signing)")
    return {"bytes": size, "files": [{"name": n, "bytes": s} for n, s in files],
            **info, "images": images, "signature": signature, "problems": found}


def _signature(fh, desc: tuple, sig: tuple) -> Dict:
    """Whether the CMS signature matches sw-description, and whose certificate made it."""
    openssl = _tool("openssl", "openssl")
    with tempfile.TemporaryDirectory(prefix="lxembed-inspect-") as tmp:
        files = {}
        for name, (offset, length) in (("desc", desc), ("sig", sig)):
            fh.seek(offset)
            files[name] = Path(tmp, name)
            files[name].write_bytes(fh.read(length))
        signer = Path(tmp, "signer.pem")
        verify = subprocess.run([openssl, "cms", "-verify", "-binary", "-noverify",
                                 "-inform", "DER", "-in", str(files["sig"]),
                                 "-content", str(files["desc"]), "-signer", str(signer),
                                 "-out", "/dev/null"], capture_output=True, text=True)
        subject = ""
        if signer.exists():
            out = subprocess.run([openssl, "x509", "-noout", "-subject", "-nameopt", "RFC2253",
                                  "-in", str(signer)], capture_output=True, text=True)
            subject = out.stdout.strip().removeprefix("subject=")
    return {"matches": verify.returncode == 0, "signer": subject}


def swu_lines(path: Path, r: Dict) -> List[str]:
    lines = [f"{path}: SWUpdate bundle, {_mib(r['bytes'])}",
             f"version {r['version']}, board {r['board']} (hardware "
             f"{', '.join(r['hardware']) or '-'})"]
    sig = r["signature"]
    if sig is None:
        lines.append("signature: NONE (no sw-description.sig)")
    else:
        verdict = "matches" if sig["matches"] else "DOES NOT match"
        lines.append(f"signature: {verdict} sw-description, by {sig['signer'] or '?'} "
                     "(whether a device trusts it is its own check)")
    for image in r["images"]:
        lines.append(f"image {image['name']}: {_mib(image['bytes'])}, sha256 "
                     f"{image['sha256'][:16]}... "
                     f"{'as pinned' if image['matches'] else 'NOT the pinned sha256'}")
    for s in r["selections"]:
        env = " ".join(f"{k}={v!r}" if " " in v else f"{k}={v}" for k, v in s["bootenv"].items())
        lines.append(f"selection {s['selection']}: {s['filename']} -> {s['device']}, then {env}")
    return lines
