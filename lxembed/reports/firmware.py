"""What is on an A/B firmware disk (writers/firmware.py), for `lxembed inspect`: its
partitions as `sfdisk -J` reads them, the boot state in the env partition, and each slot's
version and FIT.

The boot state is read as U-Boot's boot.scr and libubootenv read it (writers/firmware_boot.py):
two copies of ENV_SIZE bytes, each a CRC32 of its data, a flags byte and `name=value\\0`
pairs; of the copies whose CRC holds, the one with the higher flags (0 after 255) is current.
A slot's files are read from its ext4 in place with e2fsprogs' debugfs (`IMAGE?offset=N`:
nothing of the disk is copied but the FIT). Nothing here writes to the image.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import zlib
from pathlib import Path
from typing import Dict, List, Optional

from ..config.firmware import PARTITIONS
from ..errors import UserError
from ..rootfs.firmware import INFO
from ..writers.firmware_boot import ENV_SIZE, FIT_PATH, SLOTS, STATE_VARS
from .bundle import FDT_MAGIC, _mib, fit_lines, inspect_fit, inspect_swu, is_swu, swu_lines

SECTOR = 512
EXT_MAGIC_AT, EXT_MAGIC = 1024 + 56, b"\x53\xef"
EXT_LABEL_AT = 1024 + 120
BLANK_PROBE = 64 * 1024  # a partition whose first 64 KiB are zeros holds nothing


def is_gpt(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(SECTOR)
        return fh.read(8) == b"EFI PART"


# -- the boot state --------------------------------------------------------------------------------

def parse_env_copy(raw: bytes) -> Dict:
    """One copy: its CRC, flags and variables (none when the CRC fails)."""
    crc = int.from_bytes(raw[:4], "little")
    data = raw[5:]
    ok = zlib.crc32(data) == crc
    variables: Dict[str, str] = {}
    if ok:
        for pair in data.split(b"\0"):
            if not pair:
                break
            name, _, value = pair.decode(errors="replace").partition("=")
            variables[name] = value
    return {"crc_ok": ok, "flags": raw[4], "vars": variables}


def newer_copy(flags1: int, flags2: int) -> int:
    """1 or 2: boot.scr's rule (libubootenv's): the higher flags, 0 coming after 255."""
    if flags1 == 0xFF and flags2 == 0:
        return 2
    if flags2 == 0xFF and flags1 == 0:
        return 1
    return 1 if flags1 >= flags2 else 2


def boot_state(raw: bytes) -> Dict:
    """The env partition's two copies, which one is current and what U-Boot boots next."""
    copies = [parse_env_copy(raw[i * ENV_SIZE:(i + 1) * ENV_SIZE]) for i in range(2)]
    for n, copy in enumerate(copies, 1):
        copy["copy"] = n
        copy["offset"] = (n - 1) * ENV_SIZE
    whole = [c for c in copies if c["crc_ok"]]
    if len(whole) == 2:
        current: Optional[int] = newer_copy(copies[0]["flags"], copies[1]["flags"])
    else:
        current = whole[0]["copy"] if whole else None
    state = {"copies": copies, "current": current,
             "damaged": [c["copy"] for c in copies if not c["crc_ok"]],
             "vars": {k: copies[current - 1]["vars"].get(k) for k in STATE_VARS}
             if current else {}}
    state["next_slot"] = _next_slot(state["vars"]) if current else None
    return state


def _next_slot(variables: Dict[str, Optional[str]]) -> Optional[str]:
    """The slot boot.scr picks: the first of BOOT_ORDER with attempts left."""
    for slot in (variables.get("BOOT_ORDER") or "").split():
        try:
            if slot in SLOTS and int(variables.get(f"BOOT_{slot}_LEFT") or 0) > 0:
                return slot
        except ValueError:
            continue
    return None


# -- partitions and slots --------------------------------------------------------------------------

SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # sfdisk and debugfs are in sbin


def partition_table(path: Path) -> List[Dict]:
    sfdisk = shutil.which("sfdisk", path=SYSTEM_PATH)
    if sfdisk is None:
        raise UserError("inspect: sfdisk is not installed", hint="apt-get install fdisk")
    result = subprocess.run([sfdisk, "-J", str(path)], capture_output=True, text=True,
                            env={"PATH": SYSTEM_PATH, "LC_ALL": "C"})
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["no partition table"])[-1]
        raise UserError(f"{path}: damaged: sfdisk cannot read its partition table ({reason})")
    table = json.loads(result.stdout)["partitiontable"]
    return [{"number": n, "name": p.get("name", ""), "start": p["start"] * SECTOR,
             "bytes": p["size"] * SECTOR, "type": p["type"], "uuid": p.get("uuid", "")}
            for n, p in enumerate(table.get("partitions", []), 1)]


def _content(fh, part: Dict) -> Dict:
    """What a partition holds: ext4 (and its label), nothing, or something else."""
    fh.seek(part["start"])
    head = fh.read(BLANK_PROBE)
    if head[EXT_MAGIC_AT:EXT_MAGIC_AT + 2] == EXT_MAGIC:
        label = head[EXT_LABEL_AT:EXT_LABEL_AT + 16].split(b"\0")[0].decode(errors="replace")
        return {"filesystem": "ext4", "label": label}
    if not head.strip(b"\0"):
        return {"filesystem": "blank"}
    if head[510:512] == b"\x55\xaa" and b"FAT" in (head[54:57], head[82:85]):
        return {"filesystem": "fat"}
    return {"filesystem": "unknown"}


def _debugfs(image: Path, offset: int, request: str) -> subprocess.CompletedProcess:
    debugfs = shutil.which("debugfs", path=SYSTEM_PATH)
    if debugfs is None:
        raise UserError("inspect: debugfs is not installed", hint="apt-get install e2fsprogs")
    return subprocess.run([debugfs, "-R", request, f"{image}?offset={offset}"],
                          capture_output=True)


def inspect_slot(image: Path, part: Dict, fh, check_hashes: bool) -> Dict:
    slot = {"partition": part["number"], **_content(fh, part)}
    if slot["filesystem"] != "ext4":
        return slot
    info = _debugfs(image, part["start"], f"cat {INFO}")
    try:
        found = json.loads(info.stdout.decode())
    except ValueError:
        found = None  # an ext4 that is not an lxembed slot (or damaged)
    found = found if isinstance(found, dict) else {}
    slot.update({key: found.get(key) for key in ("version", "board", "recipe")})
    with tempfile.TemporaryDirectory(prefix="lxembed-inspect-") as tmp:
        fit = Path(tmp, "fit.itb")
        _debugfs(image, part["start"], f"dump {FIT_PATH} {fit}")
        if not fit.exists() or fit.stat().st_size == 0:
            slot["fit"] = None
            return slot
        try:
            slot["fit"] = inspect_fit(fit, check_hashes)
        except UserError as err:
            slot["fit"] = {"error": str(err).replace(str(fit), FIT_PATH)}
    return slot


def inspect_firmware(path: Path, check_hashes: bool = True) -> Dict:
    """Everything `lxembed inspect` says about a firmware disk, as a dict (--json)."""
    parts = partition_table(path)
    names = [p["name"] for p in parts]
    if names != list(PARTITIONS):
        raise UserError(f"{path}: a GPT disk, but not an lxembed firmware image (its "
                        f"partitions are {', '.join(names) or 'none'}, not "
                        f"{', '.join(PARTITIONS)})")
    size = path.stat().st_size
    end = max(p["start"] + p["bytes"] for p in parts)
    if size < end:
        raise UserError(f"{path}: damaged: the file ends at byte {size}, its data partition "
                        f"at {end} (truncated?)")
    by_name = {p["name"]: p for p in parts}
    with open(path, "rb") as fh:
        fh.seek(by_name["env"]["start"])
        state = boot_state(fh.read(2 * ENV_SIZE))
        boot = {"partition": by_name["boot"]["number"], **_content(fh, by_name["boot"])}
        slots = {slot: inspect_slot(path, by_name[slot.lower()], fh, check_hashes)
                 for slot in SLOTS}
        data = {"partition": by_name["data"]["number"], **_content(fh, by_name["data"])}
    report = {"image": str(path), "kind": "firmware", "bytes": size,
              "allocated": path.stat().st_blocks * 512, "partitions": parts, "boot": boot,
              "env": state, "slots": slots, "data": data}
    report["problems"] = problems(report)
    return report


def problems(r: Dict) -> List[str]:
    """What is wrong on the disk (the device may still boot: each says what it means)."""
    found = []
    env = r["env"]
    if env["current"] is None:
        found.append("both boot state copies are damaged: U-Boot boots with boot.scr's "
                     "defaults (slot A first) and rewrites them")
    for name, slot in r["slots"].items():
        if slot["filesystem"] not in ("ext4", "blank"):
            found.append(f"slot {name} holds no ext4 filesystem (damaged)")
        elif slot["filesystem"] == "ext4" and slot.get("version") is None:
            found.append(f"slot {name}: no {INFO} (not an lxembed slot, or damaged)")
        elif slot["filesystem"] == "ext4" and not slot.get("fit"):
            found.append(f"slot {name}: no {FIT_PATH}: it cannot boot")
        elif slot["filesystem"] == "ext4" and "error" in slot["fit"]:
            found.append(f"slot {name}: {slot['fit']['error']}")
        elif slot["filesystem"] == "ext4" and not slot["fit"]["hashes_ok"]:
            found.append(f"slot {name}: an image of its FIT does not match its sha256: "
                         "U-Boot refuses it")
    nxt = env.get("next_slot")
    if env["current"] is not None and nxt and r["slots"][nxt]["filesystem"] == "blank":
        found.append(f"the next boot tries slot {nxt}, which is blank")
    return found


def firmware_lines(r: Dict) -> List[str]:
    lines = [f"{r['image']}: lxembed A/B firmware (GPT), {_mib(r['bytes'])} "
             f"({_mib(r['allocated'])} allocated)", "partitions (sfdisk -J):"]
    contents = {"boot": r["boot"], "a": r["slots"]["A"], "b": r["slots"]["B"], "data": r["data"]}
    for p in r["partitions"]:
        what = contents.get(p["name"], {}).get("filesystem", "boot state")
        lines.append(f"  {p['number']} {p['name']:5} at {_mib(p['start']):>10}  "
                     f"{_mib(p['bytes']):>10}  {what}")
    lines += env_lines(r["env"])
    for name, slot in r["slots"].items():
        lines += slot_lines(name, slot)
    data = r["data"]
    lines.append(f"data (partition {data['partition']}): "
                 + ("blank: the first boot formats it" if data["filesystem"] == "blank" else
                    f"{data['filesystem']}" + (f", label {data['label']}"
                                               if data.get("label") else "")))
    for problem in r["problems"]:
        lines.append(f"PROBLEM: {problem}")
    return lines


def env_lines(env: Dict) -> List[str]:
    copies = ", ".join(f"copy {c['copy']} flags {c['flags']} "
                       f"{'ok' if c['crc_ok'] else 'DAMAGED (CRC mismatch)'}"
                       for c in env["copies"])
    if env["current"] is None:
        return [f"boot state: {copies}; no current copy"]
    lines = [f"boot state: copy {env['current']} is current ({copies})"]
    lines.append("  " + "  ".join(f"{k}={v}" if v is None or " " not in v else f"{k}={v!r}"
                                  for k, v in env["vars"].items()))
    nxt = env["next_slot"]
    lines.append(f"  next boot: slot {nxt}" if nxt else
                 "  next boot: no slot has attempts left (boot.scr gives each its tries again)")
    return lines


def slot_lines(name: str, slot: Dict) -> List[str]:
    head = f"slot {name} (partition {slot['partition']}): "
    if slot["filesystem"] == "blank":
        return [head + "blank (an update writes it)"]
    if slot["filesystem"] != "ext4":
        return [head + f"{slot['filesystem']} (no ext4 filesystem)"]
    if slot.get("version") is None:
        return [head + f"ext4 without {INFO}"]
    lines = [head + f"version {slot['version']} ({slot.get('board', '?')}/"
             f"{slot.get('recipe', '?')})"]
    fit = slot.get("fit")
    if not fit:
        lines.append(f"  no {FIT_PATH}")
    elif "error" in fit:
        lines.append(f"  {fit['error']}")
    else:
        lines += fit_lines(fit, "  ")
    return lines


# -- what a path is --------------------------------------------------------------------------------

def inspect_artifact(path: Path) -> Optional[Dict]:
    """The report of a firmware disk, an SWUpdate bundle or a FIT; None for anything else (an
    image `lxembed inspect` reads as a file tree)."""
    if not path.is_file():
        return None
    with open(path, "rb") as fh:
        head = fh.read(4)
    if is_gpt(path):
        return inspect_firmware(path)
    if is_swu(path):
        return {"image": str(path), "kind": "swu", **inspect_swu(path)}
    if head == FDT_MAGIC:
        fit = inspect_fit(path)
        fit["problems"] = [] if fit["hashes_ok"] else [
            "an image does not match its sha256: U-Boot refuses this FIT"]
        return {"image": str(path), "kind": "fit", **fit}
    return None


def artifact_lines(report: Dict) -> List[str]:
    if report["kind"] == "firmware":
        return firmware_lines(report)
    if report["kind"] == "swu":
        return swu_lines(Path(report["image"]), report) + [
            f"PROBLEM: {p}" for p in report["problems"]]
    return [f"{report['image']}: FIT"] + fit_lines(report) + [
        f"PROBLEM: {p}" for p in report["problems"]]
