"""The package list, which pyproject.toml cannot express: every vpsctl package (found, so a
new sub-package ships without a list to keep), plus the files vpsctl ships that live at the
checkout's top level, mapped into the package as vpsctl/_data/<name> (found there by
vpsctl.resources.shipped). Everything else is in pyproject.toml."""

from setuptools import find_packages, setup

# templates, the bootstrap deploy, the stand-in and sandbox build contexts; the example
# studio `vpsctl init` writes
SHIPPED = ("templates", "deploys", "standins", "sandbox", "inventory", "stacks", "schemas")

setup(
    packages=[
        *find_packages(include=["vpsctl", "vpsctl.*"]),
        *(f"vpsctl._data.{n}" for n in SHIPPED),
    ],
    package_dir={f"vpsctl._data.{name}": name for name in SHIPPED},
)
