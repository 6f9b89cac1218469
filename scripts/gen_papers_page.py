"""Write the docs site's seed-paper page, ``docs/papers.md``, from ``jaxsolve/_papers.py``.

Usage::

    python scripts/gen_papers_page.py            # (re)write docs/papers.md
    python scripts/gen_papers_page.py --check    # exit 1 if docs/papers.md is out of date

The page is the data rendered by :func:`jaxsolve._papers.render_markdown`; edit the data, not
the page. ``tests/test_papers.py`` fails when the committed page differs from the rendering.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run from a checkout without installing: the package beside this script comes first.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jaxsolve._papers import main

if __name__ == "__main__":
    sys.exit(main())
