"""docs/troubleshooting.md covers every error the CLI can print: each error kind the
engine declares (`kind = "..."` on its error classes, read from the source, not imported)
and each exit code of the contract."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "engine" / "dsg"
DOC = (ROOT / "docs" / "troubleshooting.md").read_text()


def engine_kinds() -> set[str]:
    kinds = set()
    for path in ENGINE.rglob("*.py"):
        kinds |= set(re.findall(r'(?m)^    kind = "([a-z_]+)"$', path.read_text()))
    return kinds


def test_every_error_kind_has_an_entry() -> None:
    kinds = engine_kinds()
    assert {"config", "usage", "conflicts", "local_io", "transport"} <= kinds, kinds
    missing = sorted(k for k in kinds if f"`{k}`" not in DOC)
    assert not missing, f"error kinds without an entry in docs/troubleshooting.md: {missing}"


def test_every_exit_code_is_explained() -> None:
    codes = {0, 130}
    for path in ENGINE.rglob("*.py"):
        codes |= {int(c) for c in re.findall(r"(?m)^EXIT_[A-Z_]+ = (\d+)$", path.read_text())}
    assert {1, 2, 3} <= codes, codes
    for code in codes:
        assert re.search(rf"(?m)^\| {code} \| ", DOC), f"exit {code} is not in the table"
