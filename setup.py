"""One build step pyproject.toml cannot declare: ship boards/, recipes/, overlays/ and qemu/
inside the package.

They stay at the top of the repository, where a checkout (and an editable install of it) reads
them; a wheel gets a copy under lxembed/_data/, where an installed lxembed reads them
(lxembed/config/product.py). package-data cannot reach outside a package's directory, and a
copy here keeps `packages.find` (every subpackage found, none to list by hand).
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

DATA_DIRS = ("boards", "recipes", "overlays", "qemu")  # MANIFEST.in grafts the same into the sdist


class BuildPyWithData(build_py):
    def run(self):
        super().run()
        if self.editable_mode:  # an editable install reads the checkout's own directories
            return
        target = Path(self.build_lib) / "lxembed" / "_data"
        shutil.rmtree(target, ignore_errors=True)  # build/ outlives builds: nothing stale
        for name in DATA_DIRS:
            # copytree keeps the executable bit, which decides an overlay file's mode (0755/0644)
            shutil.copytree(Path(name), target / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildPyWithData})
