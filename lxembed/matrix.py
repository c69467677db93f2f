"""Boards x recipes: the cells one `lxembed build` builds, and the same matrix written out for
existing CI engines (a GitHub Actions workflow, a GitLab CI pipeline), each cell its own job.

No scheduler of our own: the CI engine runs the jobs; lxembed only says what they are, and gives
each one cache keys over what its apt and kernel caches depend on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .config import list_boards, list_recipes, load_board, load_plan, load_recipe
from .errors import UserError
from .pipeline import build_image, default_output

CACHE = ".cache/lxembed"  # XDG_CACHE_HOME inside the checkout: both engines cache project paths


@dataclass(frozen=True)
class Cell:
    board: str  # names (file stems)
    recipe: str
    qemu: bool  # a qemu board boots under qemu-system; hardware runs its checks under qemu-user
    board_spec: str = ""  # as given: a name or a path to a TOML file
    recipe_spec: str = ""

    @property
    def name(self) -> str:
        return f"{self.board}-{self.recipe}"

    def commands(self) -> List[str]:
        test = f"lxembed test -b {self.board} -r {self.recipe}" + ("" if self.qemu else " --user")
        return [f"lxembed build -b {self.board} -r {self.recipe}", test]


def split_names(values: Optional[Sequence[str]]) -> List[str]:
    """`-b a,b -b c` -> [a, b, c], order kept, duplicates dropped."""
    names: List[str] = []
    for value in values or ():
        for name in value.split(","):
            if name.strip() and name.strip() not in names:
                names.append(name.strip())
    return names


def cells(boards: Sequence[str] = (), recipes: Sequence[str] = ()) -> List[Cell]:
    """The named boards x recipes; by default every board x every image recipe (container
    recipes run on the build host's architecture, so they are named explicitly)."""
    boards = list(boards) or list_boards()
    if not recipes:
        recipes = [r for r in list_recipes() if load_recipe(r).settings["container"] is None]
    loaded = {b: load_board(b) for b in boards}  # every name checked before anything runs
    names = {r: load_recipe(r).name for r in recipes}
    return [Cell(loaded[b].name, names[r], loaded[b].qemu is not None, b, r)
            for b in boards for r in recipes]


def build_cells(matrix: Sequence[Cell], formats: Sequence[str], output: Optional[Path] = None,
                mirror: Optional[str] = None) -> List[dict]:
    """Build every cell; a cell that fails is reported and the others still build. With
    `output`, cell B x R goes to OUTPUT/B-R, else to out/B-R."""
    results = []
    for cell in matrix:
        start = time.monotonic()
        result = {"board": cell.board, "recipe": cell.recipe, "ok": True, "error": None,
                  "artifacts": []}
        try:
            plan = load_plan(cell.board_spec or cell.board, cell.recipe_spec or cell.recipe)
            out = Path(output) / cell.name if output else default_output(plan)
            result["artifacts"] = [a.as_dict() for a in build_image(plan, out, formats, mirror)]
        except UserError as err:
            result.update(ok=False, error=str(err))
        result["seconds"] = round(time.monotonic() - start, 2)
        results.append(result)
    return results


def to_yaml(doc: dict) -> str:
    """YAML a person can read: multi-line commands as literal blocks, keys in given order."""
    import yaml  # only `lxembed matrix` needs it

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper, value):
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return yaml.dump(doc, Dumper=Dumper, sort_keys=False, width=1000)


def _setup(apt_proxy: Optional[str]) -> Dict[str, str]:
    env = {"XDG_CACHE_HOME": "${{ github.workspace }}/.cache"}
    if apt_proxy:
        env["LXEMBED_APT_PROXY"] = apt_proxy
    return env


def github_workflow(matrix: Sequence[Cell], apt_proxy: Optional[str] = None) -> dict:
    """One job per cell; each caches ~/.cache/lxembed under a key over its board and recipe."""
    if not matrix:
        raise UserError("the matrix is empty: name at least one board and one recipe")
    jobs = {}
    for cell in matrix:
        key = (f"lxembed-{cell.name}-${{{{ hashFiles('boards/{cell.board}.toml', "
               f"'recipes/{cell.recipe}.toml') }}}}")
        jobs[cell.name] = {
            "name": f"{cell.board} / {cell.recipe}",
            "runs-on": "ubuntu-latest",
            "container": {"image": "debian:bookworm", "options": "--privileged"},
            "env": _setup(apt_proxy),
            "steps": [
                {"uses": "actions/checkout@v4"},
                {"uses": "actions/cache@v4",
                 "with": {"path": CACHE, "key": key, "restore-keys": f"lxembed-{cell.name}-"}},
                {"name": "install", "run": "scripts/quickstart.sh setup"},
                {"name": "build and test",
                 "run": ". .venv/bin/activate\n" + "\n".join(cell.commands())},
            ],
        }
    return {"name": "lxembed matrix", "on": {"push": None, "pull_request": None}, "jobs": jobs}


def gitlab_pipeline(matrix: Sequence[Cell], apt_proxy: Optional[str] = None) -> dict:
    if not matrix:
        raise UserError("the matrix is empty: name at least one board and one recipe")
    variables = {"XDG_CACHE_HOME": "$CI_PROJECT_DIR/.cache"}
    if apt_proxy:
        variables["LXEMBED_APT_PROXY"] = apt_proxy
    doc: dict = {"image": "debian:bookworm", "variables": variables, "stages": ["cells"]}
    for cell in matrix:
        doc[cell.name] = {
            "stage": "cells",
            "cache": {"key": {"prefix": cell.name,
                              "files": [f"boards/{cell.board}.toml",
                                        f"recipes/{cell.recipe}.toml"]},
                      "paths": [CACHE]},
            "script": ["scripts/quickstart.sh setup", ". .venv/bin/activate", *cell.commands()],
        }
    return doc
