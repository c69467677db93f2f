"""The firmware format's bad inputs: one line naming the recipe or board line, exit 2, nothing
written. All but the slot that is too small are refused before anything is built."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import FIRMWARE_RECIPE, make_key

from lxembed.cli import main
from lxembed.config.loader import load_board

GOOD = FIRMWARE_RECIPE


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("fw-errors")
    make_key(base / "keys" / "dev")
    return base


def build(keys: Path, name: str, recipe: str, capsys, board: str = "qemu-arm64"):
    """`lxembed build -f firmware` in process: (exit status, the error line, the output dir)."""
    path = keys / f"{name}.toml"
    path.write_text(recipe)
    out = keys / f"out-{name}"
    code = main(["-q", "build", "-b", board, "-r", str(path), "-o", str(out), "-f", "firmware"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("lxembed: error:")]
    assert len(errors) == 1, err
    assert not out.exists() or not any(out.iterdir()), f"{out} was written"
    return code, errors[0]


def line_of(text: str, start: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if line.startswith(start))


CASES = {
    # name: (change to GOOD, the line named, words of the message)
    "no-key": (lambda t: t.replace('version = "1.0"\nkey = "keys/dev"\n', 'version = "1.0"\n'),
               "[firmware]", "has no key"),
    "missing-key": (lambda t: t.replace('key = "keys/dev"\nslot', 'key = "keys/nowhere"\nslot'),
                    'key = "keys/nowhere"', "keys/nowhere: no such directory"),
    "unsigned-fit": (lambda t: t.replace('[fit]\nkey = "keys/dev"\n', ''), "[firmware]",
                     "needs [fit] key"),
    "tries-0": (lambda t: t.replace("tries = 2", "tries = 0"), "tries", "1 to 9"),
    "tries-10": (lambda t: t.replace("tries = 2", "tries = 10"), "tries", "1 to 9"),
    "data-too-small": (lambda t: t.replace('data_size = "16MiB"', 'data_size = "4MiB"'),
                       "data_size", "at least 8 MiB"),
    "data-not-whole-mib": (lambda t: t.replace('data_size = "16MiB"', 'data_size = "9000KiB"'),
                           "data_size", "whole MiB"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_firmware_table(keys, name, capsys):
    change, named, words = CASES[name]
    recipe = change(GOOD)
    assert recipe != GOOD
    code, error = build(keys, name, recipe, capsys)
    assert code == 2
    assert f"{name}.toml:{line_of(recipe, named)}:" in error, error
    assert words in error, error


def test_slot_too_small_for_the_root(keys, capsys):
    """Known only once the root is written: still one line naming slot_size, nothing kept."""
    recipe = GOOD.replace('slot_size = "160MiB"', 'slot_size = "8MiB"')
    code, error = build(keys, "slot-8mib", recipe, capsys)
    assert code == 2
    assert f"slot-8mib.toml:{line_of(recipe, 'slot_size')}:" in error
    assert re.search(r"the root needs [\d.]+ MiB and a slot is 8 MiB", error), error


@pytest.mark.parametrize("board", ["qemu-mipsel", "qemu-x86_64"])
def test_board_without_a_usable_uboot(keys, board, capsys):
    code, error = build(keys, f"on-{board}", GOOD, capsys, board)
    assert code == 2
    path = load_board(board).path
    assert re.search(rf"{re.escape(str(path))}:\d+: board {board} has no usable U-Boot: "
                     "the firmware format cannot use it", error), error


@pytest.mark.parametrize("board", ["qemu-mipsel", "qemu-x86_64"])
def test_test_root_firmware_refused_on_a_board_without_uboot(keys, board, capsys):
    (keys / "good.toml").write_text(GOOD)
    code = main(["-q", "test", "--root", "firmware", "-b", board, "-r", str(keys / "good.toml"),
                 "-o", str(keys / f"test-{board}")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert re.search(rf"^lxembed: error: \S+{board}\.toml:\d+: board {board} has no usable "
                     "U-Boot: --root firmware cannot use it", err, re.M), err
    assert not (keys / f"test-{board}").exists()


def test_device_needs_root_firmware(keys, capsys):
    (keys / "good.toml").write_text(GOOD)
    code = main(["-q", "boot", "--device", str(keys / "dev.img"), "-b", "qemu-arm64",
                 "-r", str(keys / "good.toml")])
    err = capsys.readouterr().err
    assert code == 2 and "--device boots a firmware device disk" in err
    assert not (keys / "dev.img").exists()


def test_a_layout_bigger_than_the_boards_disk(keys, capsys, tmp_path, monkeypatch):
    """A board whose boot medium is smaller than slots + data: the data_size line, the board's
    disk_size line."""
    board = Path(load_board("qemu-arm64").path).read_text()
    boards = tmp_path / "boards"
    boards.mkdir()
    small = board.replace("[uboot]", '[uboot]\ndisk_size = "256MiB"')
    (boards / "small-emmc.toml").write_text(small)
    monkeypatch.chdir(tmp_path)
    code, error = build(keys, "too-big", GOOD, capsys, board=str(boards / "small-emmc.toml"))
    assert code == 2
    assert f"too-big.toml:{line_of(GOOD, 'data_size')}:" in error, error
    assert "needs 347 MiB" in error and "256 MiB" in error and "small-emmc.toml:" in error, error
