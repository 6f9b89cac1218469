"""Check that .ci/floors.txt pins exactly the floors (``>=``) of pyproject.toml.

Every runtime dependency and the ``plots`` extra must have a floor, and floors.txt must pin each
one at it, so the floors run of ``.ci/run`` tests what pyproject.toml promises; the accelerator
extras ask for jax at the same floor. With
``--installed``, also check that the running environment has those versions installed, on the
lowest Python that ``requires-python`` allows.
"""

import re
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def floors() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = {}
    for requirement in project["dependencies"] + project["optional-dependencies"]["plots"]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9][0-9A-Za-z.]*)", requirement.strip())
        if match is None:
            sys.exit(f"pyproject.toml: {requirement!r} is not of the form 'name>=floor'")
        found[match[1].lower()] = match[2]
    for extra in ("cuda12", "cuda13", "tpu"):  # jax for an accelerator: the same floor
        (requirement,) = project["optional-dependencies"][extra]
        if requirement != f"jax[{extra}]>={found['jax']}":
            sys.exit(f"pyproject.toml: the {extra} extra is {requirement!r}; its floor is jax's")
    return found


def pins() -> dict[str, str]:
    found = {}
    for line in (ROOT / ".ci" / "floors.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, pin = line.partition("==")
            found[name.strip().lower()] = pin.strip()
    return found


def main() -> None:
    expected, pinned = floors(), pins()
    if expected != pinned:
        wrong = sorted(set(expected.items()) ^ set(pinned.items()))
        sys.exit(f".ci/floors.txt does not pin pyproject.toml's floors; differing: {wrong}")
    if "--installed" in sys.argv[1:]:
        lowest = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
        running = "{}.{}".format(*sys.version_info[:2])
        if lowest != f">={running}":
            sys.exit(f"floors run: Python {running}, not requires-python's floor ({lowest})")
        for name, pin in pinned.items():
            try:
                have = version(name)
            except PackageNotFoundError:
                have = "not installed"
            if have != pin:
                sys.exit(f"floors run: {name} is {have}, not the floor {pin}")
    print(f"floors: {', '.join(f'{n}=={v}' for n, v in pinned.items())}")


if __name__ == "__main__":
    main()
