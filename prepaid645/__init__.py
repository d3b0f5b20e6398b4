"""The distribution's own package: where an installed wheel keeps what is not the head-end.

In the source tree `protocol/`, `tools/` and `firmware/` are top-level directories, imported as
`protocol` and `tools` (and `python -m tools.demo` runs from the checkout). A wheel that put
`protocol/` and `tools/` straight into site-packages would overwrite or shadow other distributions'
packages of those common names, so the wheel ships them as `prepaid645/protocol`,
`prepaid645/tools` and `prepaid645/firmware` (pyproject.toml's package-dir), and nothing bare goes
on sys.path. Importing this package (`headend` does, first thing; the `meter` script starts here)
makes the two names resolve to those directories for this process only, under their usual module
names, so the code and its logger names are the same in a checkout and in an installed wheel.
"""

from __future__ import annotations

import importlib.util
import sys
from importlib.machinery import ModuleSpec, PathFinder
from pathlib import Path

__all__ = ["firmware_dir", "meter"]

_SHIPPED = ("protocol", "tools")
_HERE = Path(__file__).resolve().parent


def _shipped_dir(name: str) -> Path | None:
    """Where the installed `prepaid645.<name>` lives (an editable install maps it into the checkout)."""
    spec = importlib.util.find_spec(f"{__name__}.{name}")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


class _ShippedFinder:
    """Finds the top-level `protocol` and `tools` in the directories this distribution installed them in."""

    def __init__(self, dirs: dict[str, Path]) -> None:
        self.dirs = dirs

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> ModuleSpec | None:
        where = self.dirs.get(fullname)
        if where is None:
            return None
        return PathFinder.find_spec(fullname, [str(where.parent)])  # the directory is named as the package


def _install() -> None:
    if any(isinstance(f, _ShippedFinder) for f in sys.meta_path):
        return
    dirs = {name: d for name in _SHIPPED if (d := _shipped_dir(name)) is not None}
    if dirs:  # a checkout used without installing it has none: the names are found on sys.path as ever
        sys.meta_path.insert(0, _ShippedFinder(dirs))


def firmware_dir() -> Path:
    """The MicroPython firmware sources: shipped package data in a wheel, `firmware/` in a checkout."""
    import importlib.resources  # here: headend --help needs none of it

    shipped = importlib.resources.files(__name__) / "firmware"
    if shipped.is_dir():
        return Path(str(shipped))
    return _HERE.parent / "firmware"


def meter() -> int:
    """The `meter` script (tools/meter_cli.py), reached through this package so that `tools` resolves."""
    from tools.meter_cli import main
    return main()


_install()
