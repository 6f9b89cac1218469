"""Every entry of tests/ci_checks.txt (the heavy checks CI runs apart from the default run) names
a test that exists, so that a renamed test cannot silently return to the default run."""

import ast
import functools
import os
import re

from tests.conftest import ci_checks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@functools.cache  # several entries name the same file: parse it once
def _test_file(path):
    """A test file's text and the names of the functions it defines."""
    with open(path) as f:
        text = f.read()
    tree = ast.parse(text)
    functions = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    functions |= {  # tests built by assignment (e.g. a Hypothesis-wrapped function)
        t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets
        if isinstance(t, ast.Name)
    }  # fmt: skip
    return text, functions


def test_every_ci_check_names_an_existing_test():
    assert ci_checks(), "tests/ci_checks.txt is empty"
    for node_id in sorted(ci_checks()):
        match = re.fullmatch(r"(tests/[\w/]+\.py)::(\w+)(\[[^\]]+\])?", node_id)
        assert match, f"not a node id: {node_id!r}"
        path, name = os.path.join(ROOT, match.group(1)), match.group(2)
        assert os.path.exists(path), node_id
        text, functions = _test_file(path)
        assert name in functions, node_id
        if match.group(3):  # a parametrised case: its id must appear in the file's parameters
            ids = match.group(3)[1:-1].split("-")
            assert all(part in text for part in ids if not part.replace(".", "").isdigit()), node_id
