"""Relative links in the docs (docs/*.md, docs/examples/*.md) point at files that exist and,
with a #fragment, at a heading of that file (GitHub's anchor rules)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([*(ROOT / "docs").glob("*.md"), *(ROOT / "docs" / "examples").glob("*.md")])
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(path: Path) -> set[str]:
    """GitHub's heading ids: lowercased, punctuation dropped, spaces to '-', repeats -1, -2."""
    seen: dict[str, int] = {}
    out = set()
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        m = re.match(r"^#{1,6} (.+)$", line)
        if in_code or not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path) -> None:
    text = re.sub(r"(?ms)^```.*?^```", "", doc.read_text())  # links inside code are not links
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        assert dest.exists(), f"{doc.name}: link to missing {target}"
        if fragment and dest.is_file() and dest.suffix == ".md":
            assert fragment in anchors(dest), f"{doc.name}: no heading #{fragment} in {dest.name}"


def test_engine_paths_named_in_the_docs_exist() -> None:
    """`engine/dsg/...` paths the docs cite (the engine moves between packages now and then)."""
    missing = []
    for doc in DOCS:
        for path in re.findall(r"\bengine/dsg/[\w/]*(?:\.py|/)", doc.read_text()):
            if not (ROOT / path).exists():
                missing.append(f"{doc.name}: {path}")
    assert not missing, missing
