"""The ``jaxsolve`` command: ``jaxsolve tour [--quick] [--out DIR]``."""

from __future__ import annotations

import argparse
import sys
import traceback


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jaxsolve", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    tour = sub.add_parser("tour", help="run a guided tour of what jaxsolve does, with figures")
    tour.add_argument(
        "--quick",
        action="store_true",
        help="smaller problems, for a fast check (and XLA settings that compile faster)",
    )
    tour.add_argument(
        "--out", default="jaxsolve-tour", help="folder for figures (default: %(default)s)"
    )
    args = parser.parse_args(argv)

    if args.command == "tour":
        if args.quick:
            # The quick tour is mostly XLA compiling small programs: settings that compile
            # faster with the same IEEE arithmetic, where this jaxlib knows them. XLA reads
            # XLA_FLAGS when JAX starts its first backend (importing jaxsolve, and with it JAX,
            # does not), so this comes before anything computes. A choice the user made in
            # XLA_FLAGS is kept.
            from ._core._xla_flags import add_fast_compile_flags

            add_fast_compile_flags()
        from ._core import check_writable_dir
        from ._tour import run_tour

        try:
            check_writable_dir("--out", args.out)  # before minutes of work, not after
        except ValueError as err:
            print(f"jaxsolve tour: {err}", file=sys.stderr)
            return 2
        try:
            run_tour(out=args.out, quick=args.quick)
        except Exception as err:  # a clear message and a non-zero exit, as the README promises
            traceback.print_exc()
            print(f"\njaxsolve tour FAILED: {type(err).__name__}: {err}", file=sys.stderr)
            return 1
        return 0
    return 2  # unreachable: argparse rejects unknown commands
