"""The seed-paper data (jaxsolve/_papers.py) against the seeds, the code and the docs page.

The page docs/papers.md is generated from the data, so it must equal the rendering; the data
must hold every seed title (the stored list always, the scraped seed pages when the checkout sits
beside them); and every name it lists must be public and documented as implementing the paper.
"""

import importlib
import importlib.util
import inspect
import re
import sys
from pathlib import Path

import pytest

from jaxsolve import _papers
from jaxsolve._papers import PAPERS, PILLARS, SEED_TITLES, STATUSES, Paper

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "papers.md"
SEEDS = ROOT.parent / "shared" / "seeds"


def _normalise(text):
    # Whitespace collapsed (docstrings wrap titles over lines), a hyphen that ended a line joined
    # to the next word, case folded.
    return re.sub(r"-\s+", "-", " ".join(text.split())).casefold()


def _load_seed_parser():
    spec = importlib.util.spec_from_file_location(
        "seed_papers", ROOT / "scripts" / "seed_papers.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _resolve(name):
    module_name, _, attr = name.rpartition(".")
    module = importlib.import_module(module_name)
    return module, attr


def test_page_equals_the_rendered_data():
    assert PAGE.exists(), "docs/papers.md is missing: run python scripts/gen_papers_page.py"
    assert PAGE.read_text(encoding="utf-8") == _papers.render_markdown(), (
        "docs/papers.md is out of date: run python scripts/gen_papers_page.py"
    )


def test_one_record_per_stored_seed_title():
    titles = [p.title for p in PAPERS]
    assert len(set(SEED_TITLES)) == len(SEED_TITLES), "duplicate in SEED_TITLES"
    assert len(set(titles)) == len(titles), "two records for one paper"
    assert set(titles) == set(SEED_TITLES)


@pytest.mark.skipif(
    not SEEDS.is_dir(), reason="the seed pages (../shared/seeds) are not beside this checkout"
)
def test_stored_titles_are_the_titles_parsed_from_the_seed_pages():
    parsed = _load_seed_parser().seed_titles(SEEDS)
    assert parsed == SEED_TITLES
    # The data spells each title exactly as the pages do.
    text = _normalise(" ".join(p.read_text(encoding="utf-8") for p in sorted(SEEDS.glob("*.txt"))))
    assert all(_normalise(t) in text for t in SEED_TITLES)


def test_seed_parser_on_both_page_layouts():
    abstract = "We study a thing. " * 20
    spaced = (
        "new\n\nGet trending papers in your email inbox!\n\nSubscribe\n\nDaily Papers\n\n"
        f"byAK and the research community\n\nApr 14\n\nFirst Title: With a Colon\n\n{abstract}\n\n"
        f"  • 3 authors\n·\nJan 26\n\nSecond Title\n\n{abstract}\n\n  • 1 authors\n·\n"
        "Oct 20, 2023 2\n"
    )
    # No blank lines, the first title glued to the subscribe button, a title with a run of spaces.
    dense = "\n".join(
        [
            "Get trending papers in your email inbox once a day!",
            "Get trending papers in your email inbox!",
            "SubscribeFirst Title: With a Colon",
            abstract,
            "Third   Title",
            abstract,
        ]
    )
    parser = _load_seed_parser()
    assert parser.titles_in_text(spaced) == ["First Title: With a Colon", "Second Title"]
    assert parser.titles_in_text(dense) == ["First Title: With a Colon", "Third Title"]
    assert parser.stray_lines(spaced) == []


def test_status_pillar_and_names_are_consistent():
    for paper in PAPERS:
        assert paper.status in STATUSES and paper.pillar in PILLARS
        assert bool(paper.names) == (paper.status in ("implemented", "partly")), paper.title
        assert len(set(paper.names)) == len(paper.names), paper.title


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(status="done"), ValueError),
        (dict(pillar="graphs"), ValueError),
        (dict(status="out of scope"), ValueError),  # pillar stays "diffusion"
        (dict(names=()), ValueError),  # implemented without a name
        (dict(status="not implemented"), ValueError),  # a name on an unbuilt paper
        (dict(names=("DPMSolver",)), ValueError),
        (dict(names=["jaxsolve.diffusion.DPMSolver"]), TypeError),
        (dict(note=""), ValueError),
        (dict(title="Two  spaces"), ValueError),
    ],
)
def test_paper_refuses_inconsistent_records(kwargs, error):
    base = dict(
        title="A Title",
        status="implemented",
        pillar="diffusion",
        names=("jaxsolve.diffusion.DPMSolver",),
        note="a note",
    )
    with pytest.raises(error):
        Paper(**{**base, **kwargs})


@pytest.mark.parametrize("name", sorted({n for p in PAPERS for n in p.names}))
def test_every_listed_name_is_public(name):
    module, attr = _resolve(name)
    assert attr in module.__all__, f"{attr} is not in {module.__name__}.__all__"
    assert getattr(module, attr) is not None


_IMPLEMENTED = [p for p in PAPERS if p.names]


@pytest.mark.parametrize("paper", _IMPLEMENTED, ids=[p.title[:40] for p in _IMPLEMENTED])
def test_every_name_is_documented_as_implementing_its_paper(paper):
    # jaxsolve writes a method family's maths and paper title in the docstring of the module that
    # defines it, and a class or function there often says "see the module": both count.
    wanted = [_normalise(paper.title), *(_normalise(a) for a in paper.aliases)]
    missing = []
    for name in paper.names:
        module, attr = _resolve(name)
        obj = getattr(module, attr)
        text = _normalise(inspect.getdoc(obj) or "")
        text += " " + _normalise(sys.modules[obj.__module__].__doc__ or "")
        if not any(w in text for w in wanted):
            missing.append(name)
    assert not missing, f"docstrings do not name {paper.title!r}: {missing}"


def test_aliases_name_their_own_paper_only():
    for paper in PAPERS:
        for alias in paper.aliases:
            others = [
                p.title
                for p in PAPERS
                if p is not paper and _normalise(alias) in _normalise(p.title)
            ]
            assert not others, f"alias {alias!r} of {paper.title!r} also matches {others}"


def test_page_lists_every_title_and_every_name_once_per_listing():
    page = _papers.render_markdown()
    for paper in PAPERS:
        assert page.count(f"**{_papers._escape(paper.title)}**") == 1, paper.title
        for name in paper.names:
            assert f"][{name}]" in page
    counts = re.findall(
        r"^\| (implemented|partly|not implemented|out of scope) \| (\d+) \|$", page, re.M
    )
    assert {s: int(n) for s, n in counts} == {
        s: sum(p.status == s for p in PAPERS) for s in STATUSES
    }


def test_markdown_special_characters_are_escaped():
    paper = Paper(
        title="A `quoted' *starred* [bracketed] $1_000",
        status="out of scope",
        pillar="other",
        note="x|y",
    )
    page = _papers.render_markdown((paper,))
    assert r"**A \`quoted' \*starred\* \[bracketed\] \$1\_000** — x\|y." in page


def test_check_mode_detects_a_stale_page(tmp_path):
    out = tmp_path / "papers.md"
    assert _papers.main(["--check", "--out", str(out)]) == 1  # missing
    out.write_text("stale", encoding="utf-8")
    assert _papers.main(["--check", "--out", str(out)]) == 1
    assert _papers.main(["--out", str(out)]) == 0
    assert _papers.main(["--check", "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == _papers.render_markdown()
