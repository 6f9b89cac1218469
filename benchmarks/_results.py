"""What the benchmark scripts that keep a table in benchmarks/README.md share: the machine a run
used, atomic JSON writes (several runs may write one results file), and the README block between
two markers that a script regenerates from its results files."""

from __future__ import annotations

import json
import os
import platform
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def machine_info(**versions) -> dict:
    """Platform, cores, device, load average, jax/python versions (plus ``versions``) and the
    commit, recorded beside every result so a number names the machine and code behind it."""
    import jax

    dev = jax.devices()[0]
    info = {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "device": f"{dev.platform}: {dev.device_kind}",
        "load_average_start": list(os.getloadavg()),
        "versions": {"jax": jax.__version__, "python": platform.python_version(), **versions},
    }
    try:
        info["commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        pass
    return info


def write_json(doc, path: str) -> None:
    """Write ``doc`` to ``path`` through a temporary file, so a reader never sees half a file."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(tmp, path)


def result_sections(files, markdown) -> list[str]:
    """``markdown(results, title)`` for each ``(file name in results/, title)`` that exists."""
    sections = []
    for name, title in files:
        path = os.path.join(HERE, "results", name)
        if os.path.exists(path):
            sections.append(markdown(json.load(open(path)), title))
    return sections


def update_readme(begin: str, end: str, body: str) -> None:
    """Replace what lies between the ``begin`` and ``end`` markers of benchmarks/README.md by
    ``body`` (appending the marked block when the markers are not there yet)."""
    path = os.path.join(HERE, "README.md")
    text = open(path).read() if os.path.exists(path) else ""
    block = begin + "\n" + body + "\n" + end
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)
