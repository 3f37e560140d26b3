"""Bandit over the engine, gated by a reviewed baseline of accepted findings.

    python scripts/security/bandit_gate.py [--baseline FILE] [--write-baseline] [TARGET...]

Runs bandit (all severities and confidences, `# nosec` ignored so every suppression is in the
baseline where it is reviewed, not in the code) over TARGET (default engine/dsg) and compares
its findings with the baseline. Exit 0 when every finding is accepted, 1 when a finding is new
or an accepted one has no justification, 2 when bandit cannot run.

The baseline (scripts/security/bandit-baseline.txt) has one accepted finding per line:

    <path> :: <test id> :: <the flagged source line, stripped> :: <why it is accepted>

A finding matches an entry with the same path, test id and source line, so moving code up or
down a file keeps it accepted, while a second identical finding in the same file needs a
second entry (each entry accepts one finding). `bandit -b` matches on path, test and message
only, so it would let any number of new `subprocess` calls into a file that already had one;
that is why the baseline is not bandit's own. Entries no longer found are reported (remove
them); --write-baseline prints the current findings in baseline form, keeping the
justifications of those already accepted and marking new ones TODO for review.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BASELINE = REPO / "scripts" / "security" / "bandit-baseline.txt"
DEFAULT_TARGETS = ("engine/dsg",)
SEP = " :: "
TODO = "TODO"


@dataclass(frozen=True)
class Finding:
    path: str
    test_id: str
    code: str
    line: int = 0
    text: str = ""
    severity: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.path, self.test_id, self.code)


@dataclass(frozen=True)
class Entry:
    path: str
    test_id: str
    code: str
    why: str
    lineno: int

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.path, self.test_id, self.code)


def _relative(path: str) -> str:
    p = Path(path).resolve()
    try:
        return p.relative_to(REPO).as_posix()
    except ValueError:
        return p.as_posix()


def _source_line(path: str, line: int) -> str:
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return lines[line - 1].strip() if 0 < line <= len(lines) else ""


def run_bandit(targets: list[str]) -> list[Finding]:
    """Bandit's findings over `targets` (raises RuntimeError when bandit cannot run)."""
    argv = [sys.executable, "-m", "bandit", "-r", "-q", "-f", "json", "--ignore-nosec", *targets]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=600)
    try:
        doc = json.loads(proc.stdout)
    except ValueError as e:
        raise RuntimeError(
            f"bandit did not run ({' '.join(argv)}: exit {proc.returncode}): "
            f"{(proc.stderr or proc.stdout).strip()[-600:]}"
        ) from e
    if doc.get("errors"):
        raise RuntimeError(f"bandit could not scan some files: {doc['errors']}")
    found = []
    for r in doc.get("results", []):
        found.append(
            Finding(
                path=_relative(r["filename"]),
                test_id=r["test_id"],
                code=_source_line(r["filename"], r["line_number"]),
                line=r["line_number"],
                text=r["issue_text"],
                severity=f"{r['issue_severity']}/{r['issue_confidence']}",
            )
        )
    return sorted(found, key=lambda f: (f.path, f.line, f.test_id))


def load_baseline(path: Path) -> tuple[list[Entry], list[str]]:
    """The entries of a baseline file, and the problems with it (malformed, unjustified)."""
    entries, problems = [], []
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(SEP, 3)
        if len(parts) != 4 or not all(p.strip() for p in parts[:3]):
            problems.append(f"{path.name}:{n}: not '<path> :: <test id> :: <code> :: <why>'")
            continue
        rel, test_id, code, why = (p.strip() for p in parts)
        if not why or why.startswith(TODO):
            problems.append(f"{path.name}:{n}: {rel} {test_id} has no justification")
        entries.append(Entry(rel, test_id, code, why, n))
    return entries, problems


def compare(findings: list[Finding], entries: list[Entry]) -> tuple[list[Finding], list[Entry]]:
    """(findings no entry accepts, entries that accept no finding); one finding per entry."""
    budget = Counter(e.key for e in entries)
    new = []
    for f in findings:
        if budget[f.key] > 0:
            budget[f.key] -= 1
        else:
            new.append(f)
    stale, left = [], dict(budget)
    for e in entries:
        if left.get(e.key, 0) > 0:
            left[e.key] -= 1
            stale.append(e)
    return new, stale


def render(findings: list[Finding], entries: list[Entry]) -> str:
    """The findings as baseline lines, with the justifications already given."""
    whys: dict[tuple[str, str, str], list[str]] = {}
    for e in entries:
        whys.setdefault(e.key, []).append(e.why)
    out = []
    for f in findings:
        given = whys.get(f.key) or []
        why = given.pop(0) if given else f"{TODO}: {f.text}"
        out.append(SEP.join((f.path, f.test_id, f.code, why)))
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("targets", nargs="*", default=list(DEFAULT_TARGETS))
    ap.add_argument("--baseline", type=Path, default=BASELINE)
    ap.add_argument("--write-baseline", action="store_true", help="print findings as a baseline")
    args = ap.parse_args(argv)
    try:
        findings = run_bandit(args.targets)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        print(f"bandit: {e}", file=sys.stderr)
        return 2
    entries, problems = load_baseline(args.baseline) if args.baseline.is_file() else ([], [])
    if args.write_baseline:
        sys.stdout.write(render(findings, entries))
        return 0
    new, stale = compare(findings, entries)
    for f in new:
        print(f"NEW {f.path}:{f.line}: {f.test_id} [{f.severity}] {f.text}\n    {f.code}")
    for p in problems:
        print(f"BASELINE {p}")
    for e in stale:
        print(f"STALE {args.baseline.name}:{e.lineno}: {e.path} {e.test_id} no longer found")
    accepted = len(findings) - len(new)
    print(
        f"bandit: {len(findings)} findings, {accepted} accepted by the baseline, "
        f"{len(new)} new, {len(stale)} stale baseline entries"
    )
    if new:
        print(
            "fix each NEW finding, or (after review) add it to "
            f"{_relative(str(args.baseline))} with a one-line justification"
        )
    return 1 if new or problems else 0


if __name__ == "__main__":
    sys.exit(main())
