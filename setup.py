"""The wheel's package layout (the metadata is in pyproject.toml).

`headend` installs as itself. protocol/, tools/ and firmware/ are top-level in the source tree
(imported as `protocol` and `tools`, the firmware put on a MicroPython path) but install under
the distribution's own package, as prepaid645/protocol, prepaid645/tools and prepaid645/firmware:
bare `protocol` and `tools` in site-packages would overwrite or shadow other distributions' packages
of those names. prepaid645/__init__.py makes the code find them there (tests/test_wheel.py proves it
from an installed wheel, outside the checkout).
"""

from setuptools import find_namespace_packages, find_packages, setup

SHIPPED = ("protocol", "tools", "firmware")

packages = find_packages(include=["headend", "headend.*"]) + ["prepaid645"]
for top in SHIPPED:
    # namespace discovery: the firmware's top level and protocol/vectors have no __init__.py
    packages += [f"prepaid645.{p}" for p in find_namespace_packages(include=[top, f"{top}.*"])
                 if "__pycache__" not in p]

setup(packages=packages, package_dir={f"prepaid645.{top}": top for top in SHIPPED})
