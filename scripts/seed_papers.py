"""Extract the paper titles from the scraped seed paper-list pages.

The seed pages (``../shared/seeds/*.txt`` beside the checkout) are paper-list pages copied as
text: each paper is a title line followed by its abstract paragraph, mixed with page furniture
("Subscribe", "Daily Papers", "• 3 authors", "·", dates such as "Feb 10, 2025" or "Oct 20,
2023 2" where the trailing number is an upvote count). Some pages keep blank lines between
entries, one does not and glues the first title onto "Subscribe".

A title is the last non-furniture line before an abstract; an abstract is told from a title by
its length (every title in the seeds is under 170 characters, every abstract over 250).

Usage::

    python scripts/seed_papers.py [SEEDS_DIR]        # one title per line, then the count
    python scripts/seed_papers.py --python [SEEDS_DIR]  # the titles as a Python tuple literal
"""

from __future__ import annotations

import argparse
import itertools
import re
import sys
from pathlib import Path

DEFAULT_SEEDS = Path(__file__).resolve().parents[2] / "shared" / "seeds"

# A line longer than this is an abstract; titles in the seeds stop at 168 characters and the
# shortest abstract has 262, so the gap is wide.
ABSTRACT_MIN_CHARS = 220

_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_FURNITURE = re.compile(
    r"^(?:"
    r"·|new|Subscribe|Daily Papers|byAK and the research community"
    r"|Get trending papers in your email inbox.*"
    r"|•\s*\d+\s+authors?"
    # A date, optionally with a year, an upvote count, and the next entry's "new" badge.
    rf"|{_MONTH} \d{{1,2}}(?:, \d{{4}})?(?: \d+)?(?:new)?"
    r")$"
)
# The page without blank lines glues the first title onto the subscribe button's label.
_GLUED_PREFIX = re.compile(r"^Subscribe(?=\S)")


def normalise(text: str) -> str:
    """Collapse runs of whitespace to one space and strip the ends (for comparing titles)."""
    return " ".join(text.split())


def _content_lines(text: str) -> list[str]:
    lines = []
    for raw in text.splitlines():
        line = normalise(raw)
        if not line:
            continue
        line = _GLUED_PREFIX.sub("", line)
        if _FURNITURE.match(line):
            continue
        lines.append(line)
    return lines


def titles_in_text(text: str) -> list[str]:
    """Titles in one seed page, in page order: each line that precedes an abstract."""
    lines = _content_lines(text)
    titles = []
    for previous, line in itertools.pairwise(lines):
        if len(line) >= ABSTRACT_MIN_CHARS and len(previous) < ABSTRACT_MIN_CHARS:
            titles.append(previous)
    return titles


def stray_lines(text: str) -> list[str]:
    """Short non-furniture lines that are not titles (should be empty: shown for checking)."""
    lines = _content_lines(text)
    titles = set(titles_in_text(text))
    return [line for line in lines if len(line) < ABSTRACT_MIN_CHARS and line not in titles]


def seed_titles(seeds_dir: Path | str = DEFAULT_SEEDS) -> tuple[str, ...]:
    """Every distinct title over all ``*.txt`` pages of ``seeds_dir`` (sorted by file name),
    first occurrence first."""
    seeds_dir = Path(seeds_dir)
    files = sorted(seeds_dir.glob("*.txt"))
    if not files:
        raise ValueError(f"seeds_dir: no *.txt seed pages in {seeds_dir}")
    seen: dict[str, None] = {}
    for path in files:
        for title in titles_in_text(path.read_text(encoding="utf-8")):
            seen.setdefault(title, None)
    return tuple(seen)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("seeds_dir", nargs="?", default=str(DEFAULT_SEEDS))
    parser.add_argument("--python", action="store_true", help="print a Python tuple literal")
    args = parser.parse_args(argv)
    seeds_dir = Path(args.seeds_dir)
    titles = seed_titles(seeds_dir)
    if args.python:
        print("SEED_TITLES = (")
        for title in titles:
            print(f"    {title!r},")
        print(")")
        return 0
    for title in titles:
        print(title)
    print(f"# {len(titles)} distinct titles", file=sys.stderr)
    for path in sorted(seeds_dir.glob("*.txt")):
        stray = stray_lines(path.read_text(encoding="utf-8"))
        for line in stray:
            print(f"# stray line in {path.name}: {line}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
