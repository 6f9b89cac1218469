r"""What a checkpoint remembers about the run that wrote it, to refuse resuming a different run.

An optax optimiser is a pair of functions ``(init, update)``; its hyper-parameters (learning rate,
betas, schedule constants, ...) are values those functions close over, and the functions they call
(a schedule, the transformations of a ``chain``) close over theirs. :func:`hyperparameters` walks
that graph and lists every value it reaches as ``(where, value)``, e.g.
``("update.update_fns[1].update.step_size_fn.init_value", "0.01")``. Two optimisers built the same
way give the same list in any process; changing ``optax.adam(1e-3)`` to ``optax.adam(2e-3)``, or a
schedule's decay steps, changes an entry, and the first changed entry is what the error names.

What it reads: the closures, default arguments and ``functools.partial`` arguments of every
function reached; the attributes of the objects reached (a bound method's ``self``, dataclasses,
Equinox modules, named tuples); and, for functions written outside the libraries (a hand-written
schedule ``lambda count: 0.1 * 0.99**count``), also the numbers in their code and the module-level
numbers they refer to. Small arrays are listed by value, larger ones by a SHA-256 of their bytes.

Limits: a hyper-parameter read at call time from somewhere the walk does not reach (a mutable
object's attribute changed after building the optimiser, a value held by a C extension) is not
seen; the walk stops after ``_MAX_ENTRIES`` values. Library functions are named by module and
qualified name, not by their code, so a checkpoint survives an optax upgrade that renames nothing
(and one that renames a closure variable is refused — as a different optimiser).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import types

import jax
import numpy as np

_MAX_ENTRIES = 2000
_MAX_DEPTH = 40
# Arrays up to this many elements are listed by value, larger ones by a hash of their bytes
# (up to _MAX_HASHED elements) or by shape and dtype alone.
_MAX_LISTED = 16
_MAX_HASHED = 1 << 24
_LIBRARIES = ("optax", "jax", "jaxlib", "numpy", "equinox", "chex", "jaxsolve", "functools")


def describe_array(x) -> str:
    """``dtype[shape] values`` for a small array (PRNG keys by their key data), else
    ``dtype[shape] sha256:...`` of its bytes; the same string in every process."""
    head = f"{x.dtype}{list(np.shape(x))}"
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    a = np.asarray(x)
    if a.size <= _MAX_LISTED:
        return f"{head} {a.ravel().tolist()!r}"
    if a.size <= _MAX_HASHED:
        return f"{head} sha256:{hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]}"
    return head


def _is_user_code(fn: types.FunctionType) -> bool:
    module = (getattr(fn, "__module__", None) or "").split(".")[0]
    return module not in _LIBRARIES


def _code_numbers(code: types.CodeType):
    """The numeric constants of ``code`` and of the functions defined inside it."""
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_numbers(const)
        elif isinstance(const, (int, float, complex)):
            yield const


def hyperparameters(obj) -> list[list[str]]:
    """``[[where, value], ...]``: every value reachable from ``obj`` (see the module docstring)."""
    entries: list[list[str]] = []
    seen: set[int] = set()

    def add(where, value):
        if len(entries) < _MAX_ENTRIES:
            entries.append([where, value])

    def walk(x, where, depth):
        if len(entries) >= _MAX_ENTRIES:
            return
        if x is None or isinstance(x, (bool, int, float, complex, str, bytes)):
            add(where, repr(x))
            return
        if isinstance(x, jax.core.Tracer):
            add(where, "traced")
            return
        if isinstance(x, (np.ndarray, np.generic, jax.Array)):
            add(where, describe_array(x))
            return
        if isinstance(x, types.ModuleType):
            add(where, f"module {x.__name__}")
            return
        if isinstance(x, type):
            add(where, f"class {x.__module__}.{x.__qualname__}")
            return
        if depth > _MAX_DEPTH:
            add(where, "...")
            return
        if id(x) in seen:  # shared or cyclic: listed where first met
            return
        seen.add(id(x))
        if isinstance(x, functools.partial):
            walk(x.func, f"{where}.func", depth + 1)
            walk(x.args, f"{where}.args", depth + 1)
            walk(x.keywords, f"{where}.keywords", depth + 1)
        elif inspect.ismethod(x):
            walk(x.__func__, where, depth + 1)
            walk(x.__self__, f"{where}.self", depth + 1)
        elif isinstance(x, types.FunctionType):
            add(where, f"function {x.__module__}.{x.__qualname__}")
            cells = x.__closure__ or ()
            for name, cell in zip(x.__code__.co_freevars, cells, strict=True):
                try:
                    value = cell.cell_contents
                except ValueError:  # a cell not yet filled
                    continue
                walk(value, f"{where}.{name}", depth + 1)
            for i, value in enumerate(x.__defaults__ or ()):
                walk(value, f"{where}.defaults[{i}]", depth + 1)
            for name, value in sorted((x.__kwdefaults__ or {}).items()):
                walk(value, f"{where}.{name}", depth + 1)
            if _is_user_code(x):
                numbers = list(_code_numbers(x.__code__))
                if numbers:
                    add(f"{where}.constants", repr(numbers))
                for name in x.__code__.co_names:
                    value = x.__globals__.get(name)
                    if isinstance(value, (int, float, complex, np.ndarray, np.generic, jax.Array)):
                        walk(value, f"{where}.{name}", depth + 1)
        elif isinstance(x, tuple) and hasattr(x, "_fields"):  # named tuples
            for name in x._fields:
                walk(getattr(x, name), f"{where}.{name}", depth + 1)
        elif isinstance(x, (tuple, list)):
            for i, value in enumerate(x):
                walk(value, f"{where}[{i}]", depth + 1)
        elif isinstance(x, dict):
            for key in sorted(x, key=repr):
                walk(x[key], f"{where}[{key!r}]", depth + 1)
        elif isinstance(x, (set, frozenset)):
            add(where, repr(sorted(map(repr, x))))
        elif hasattr(x, "__wrapped__"):  # jax.jit, custom_jvp, ...: the function they wrap
            # (their other attributes hold source file and line numbers, which editing moves)
            add(where, f"{type(x).__module__}.{type(x).__qualname__}")
            walk(x.__wrapped__, f"{where}.__wrapped__", depth + 1)
        elif dataclasses.is_dataclass(x):  # Equinox modules too
            add(where, f"{type(x).__module__}.{type(x).__qualname__}")
            for field in dataclasses.fields(x):
                walk(getattr(x, field.name, None), f"{where}.{field.name}", depth + 1)
        elif hasattr(x, "__dict__"):
            add(where, f"{type(x).__module__}.{type(x).__qualname__}")
            for name, value in sorted(vars(x).items()):
                if not (name.startswith("__") and name.endswith("__")):
                    walk(value, f"{where}.{name}", depth + 1)
        else:  # builtins, compiled functions, ...: their name is all that is stable
            name = getattr(x, "__qualname__", None) or getattr(x, "__name__", None)
            add(where, f"{type(x).__qualname__} {name}" if name else type(x).__qualname__)

    walk(obj, "optimizer", 0)
    return entries


def first_difference(saved: list, current: list) -> str:
    """Where two :func:`hyperparameters` lists first differ, in words."""
    for (where_a, a), (where_b, b) in zip(saved, current, strict=False):
        if where_a != where_b:
            return (
                f"its structure differs from {where_a} on ({where_b} in this call), "
                "a different chain of transformations"
            )
        if a != b:
            return f"{where_a} is {a} in the checkpoint and {b} in this call"
    if len(saved) != len(current):
        return (
            f"the checkpoint's optimizer has {len(saved)} hyper-parameter entries and this "
            f"call's {len(current)}, a different chain of transformations"
        )
    return "no difference"
