"""Size budgets, `lxembed size` (table, JSON, SVG chart) and `lxembed diff`."""

from __future__ import annotations

import hashlib
import json
import xml.dom.minidom

import pytest
from conftest import run_lxembed

from lxembed.reports.chart import size_chart
from lxembed.reports.diff import diff_manifests
from lxembed.reports.size import budget_message, size_report
from lxembed.tree import RootfsTree
from lxembed.writers.output import write_formats


def _tree() -> RootfsTree:
    tree = RootfsTree()
    noise = b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(8000))  # 256000 bytes
    tree.write("/usr/bin/big", noise, origin="bigpkg")  # does not compress
    tree.write("/usr/share/zeros", b"\0" * 1_000_000, origin="zeropkg")  # compresses to nothing
    tree.write("/etc/conf", b"x = 1\n", origin="skeleton")
    return tree


def _entries(tree):
    return [(p, e.origin, len(e.data), e.data) for p, e in tree if e.type == "file"]


def test_shares_follow_compressed_size_and_add_up_to_the_image():
    report = size_report(_entries(_tree()), "img", 50_000, "squashfs")
    packages = {g.name: g for g in report.packages()}
    assert report.packages()[0].name == "bigpkg"
    assert packages["zeropkg"].apparent > packages["bigpkg"].apparent
    assert packages["zeropkg"].share < packages["bigpkg"].share / 10
    assert abs(sum(g.share for g in report.packages()) - 50_000) < 1
    assert report.directories()[0].name == "/usr/bin"


def test_budget_message_names_overage_and_biggest_contributors():
    report = size_report(_entries(_tree()), "img", 50_000, "squashfs")
    text = budget_message("rootfs.squashfs", 4 * 1024 * 1024 + 7, 4 * 1024 * 1024, report)
    assert text.startswith("rootfs.squashfs is over its 4.0 MiB budget by 7 bytes")
    assert "bigpkg" in text and "/usr/bin/big" in text


def test_chart_is_svg_with_a_bar_per_package_and_directory():
    svg = size_chart(size_report(_entries(_tree()), "img", 50_000, "squashfs"))
    doc = xml.dom.minidom.parseString(svg)
    bars = doc.getElementsByTagName("rect")[1:]  # the first is the background
    assert len(bars) == 3 + 3
    assert "bigpkg" in svg and "/usr/share" in svg


def test_diff_reports_added_removed_grown_and_shrunk():
    def manifest(files):
        return {"entries": [{"path": p, "type": "file", "size": s, "sha256": h, "origin": o}
                            for p, (s, h, o) in files.items()]}
    before = manifest({"/a": (10, "1", "p"), "/b": (20, "2", "p"), "/c": (5, "3", "q"),
                       "/same": (9, "9", "q")})
    after = manifest({"/a": (15, "4", "p"), "/b": (2, "5", "p"), "/d": (100, "6", "r"),
                      "/same": (9, "9", "q")})
    result = diff_manifests(before, after).as_dict()
    kinds = {f["path"]: f["kind"] for f in result["files"]}
    assert kinds == {"/a": "grown", "/b": "shrunk", "/c": "removed", "/d": "added"}
    assert result["delta"] == 126 - 44
    assert result["packages"][0] == {"package": "r", "delta": 100, "added": 1, "removed": 0,
                                     "grown": 0, "shrunk": 0, "changed": 0}


def test_size_command_on_an_output_directory(tmp_path):
    write_formats(_tree(), tmp_path, ["squashfs", "cpio"])
    result = run_lxembed("size", str(tmp_path), "--json", "--svg", str(tmp_path / "c.svg"),
                         check=True)
    report = json.loads(result.stdout)
    assert report["image"].endswith("rootfs.squashfs") and report["estimated_shares"]
    assert report["packages"][0]["name"] == "bigpkg"
    assert (tmp_path / "c.svg").read_text().startswith("<svg")
    text = run_lxembed("size", str(tmp_path / "rootfs.squashfs"), check=True).stdout
    assert "bigpkg" in text and "share" in text


@pytest.mark.slow
def test_a_budget_one_byte_too_small_fails_with_the_exact_overage(tmp_path):
    out = tmp_path / "out"
    built = json.loads(run_lxembed("build", "-b", "qemu-arm64", "-r", "busybox", "-o", str(out),
                                   "--format", "squashfs", "--json", check=True).stdout)
    size = next(a["bytes"] for a in built["artifacts"] if a["format"] == "squashfs")
    recipe = tmp_path / "tight.toml"
    recipe.write_text(f'base = "busybox"\n\n[max_size]\nsquashfs = {size - 1}\n')
    before = (out / "rootfs.squashfs").read_bytes()
    result = run_lxembed("build", "-b", "qemu-arm64", "-r", str(recipe), "-o", str(out),
                         "--format", "squashfs")
    assert result.returncode == 2
    assert "rootfs.squashfs is over its" in result.stderr
    assert f"budget by 1 byte ({size} > {size - 1})" in result.stderr
    assert "busybox-static" in result.stderr and "Traceback" not in result.stderr
    assert (out / "rootfs.squashfs").read_bytes() == before  # the previous build stays
    recipe.write_text(f'base = "busybox"\n\n[max_size]\nsquashfs = {size}\n')
    run_lxembed("build", "-b", "qemu-arm64", "-r", str(recipe), "-o", str(out),
                "--format", "squashfs", check=True)


@pytest.mark.slow
def test_python_is_the_biggest_contributor_of_busybox_python(tmp_path):
    run_lxembed("build", "-b", "qemu-arm64", "-r", "busybox-python", "-o", str(tmp_path),
                "--format", "squashfs,cpio.zst", check=True)
    report = json.loads(run_lxembed("size", str(tmp_path), "--json", check=True).stdout)
    assert report["packages"][0]["name"] == "python3.11-minimal"
    cpio = json.loads(run_lxembed("size", str(tmp_path), "--format", "cpio.zst", "--json",
                                  check=True).stdout)
    assert cpio["packages"][0]["name"] == "python3.11-minimal"


@pytest.mark.parametrize("line,message", [
    ('squashfs = "4MB"', r"bad.toml:4: \[max_size\] squashfs: '4MB' is not a size"),
    ('floppy = "4MiB"', r"bad.toml:4: \[max_size\]: unknown format 'floppy'"),
])
def test_bad_budgets_name_the_recipe_line_before_anything_is_built(tmp_path, line, message):
    import re
    recipe = tmp_path / "bad.toml"
    recipe.write_text(f'base = "busybox"\n\n[max_size]\n{line}\n')
    result = run_lxembed("build", "-b", "qemu-arm64", "-r", str(recipe), "-o",
                         str(tmp_path / "out"), "--format", "squashfs")
    assert result.returncode == 2 and re.search(message, result.stderr), result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fmt", ["squashfs", "ext4"])
def test_size_reads_contents_back_from_a_filesystem_image(tmp_path, fmt):
    write_formats(_tree(), tmp_path, [fmt])  # no dir, tar or cpio beside it
    report = json.loads(run_lxembed("size", str(tmp_path), "--json", check=True).stdout)
    assert report["image"].endswith(f"rootfs.{fmt}") and report["estimated_shares"]
    packages = {p["name"]: p for p in report["packages"]}
    if fmt == "squashfs":  # compressed: the zeros take next to nothing
        assert packages["zeropkg"]["share"] < packages["bigpkg"]["share"] / 10
