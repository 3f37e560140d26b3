"""pip-audit of the engine's dependencies, honest about an unreachable vulnerability service.

    python scripts/security/deps_audit.py [--requirements FILE] [--strict]

Without --requirements it audits the environment of the Python running it (.venv: the engine's
dependencies at the installed versions, and the dev tools beside them); with it, a pinned
requirements file such as a release's hashed requirements.lock (audited as pinned, nothing
resolved or installed). The engine itself is skipped: it is installed editable, and "dsg" on
PyPI is somebody else's project.

Exit 0: no known vulnerability (or no service reachable, said so, without --strict).
Exit 1: a known vulnerability. Exit 3: no service reachable and --strict. Exit 2: pip-audit
missing or failing for another reason.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

SERVICES = ("pypi", "osv")  # pip-audit's vulnerability services, tried in this order
UNREACHABLE_SIGNS = (
    "ConnectionError",
    "NameResolutionError",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "timed out",
    "Network is unreachable",
)


def audit(service: str, requirements: Path | None) -> tuple[str, list[dict], str]:
    """("ok" | "vulnerable" | "unreachable" | "error", dependencies, detail)."""
    argv = [sys.executable, "-m", "pip_audit", "-f", "json", "--progress-spinner", "off"]
    argv += ["-s", service, "--timeout", "20"]
    if requirements:
        argv += ["-r", str(requirements), "--disable-pip", "--no-deps"]
    else:
        argv += ["--skip-editable"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        return "unreachable", [], f"{service}: no answer in 900 s"
    try:
        deps = json.loads(proc.stdout).get("dependencies", [])
    except ValueError:
        err = proc.stderr.strip()
        if any(sign in err for sign in UNREACHABLE_SIGNS):
            return "unreachable", [], f"{service}: {err.splitlines()[-1][:300]}"
        return "error", [], f"pip-audit -s {service} (exit {proc.returncode}): {err[-600:]}"
    audited = [d for d in deps if "skip_reason" not in d]
    if deps and not audited:
        reasons = "; ".join(sorted({d["skip_reason"].split(":")[0] for d in deps}))
        return "unreachable", deps, f"{service}: no dependency could be audited ({reasons})"
    if any(d.get("vulns") for d in audited):
        return "vulnerable", deps, service
    return "ok", deps, service


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requirements", type=Path, help="a pinned requirements/lock file")
    ap.add_argument("--strict", action="store_true", help="fail when no service is reachable")
    args = ap.parse_args(argv)
    try:
        import pip_audit  # noqa: F401
    except ImportError:
        print("pip-audit is not installed in this environment", file=sys.stderr)
        return 2
    if args.requirements and not args.requirements.is_file():
        print(f"{args.requirements}: no such file", file=sys.stderr)
        return 2
    notes = []
    for service in SERVICES:
        state, deps, detail = audit(service, args.requirements)
        if state == "error":
            print(detail, file=sys.stderr)
            return 2
        if state == "unreachable":
            notes.append(detail)
            continue
        audited = [d for d in deps if "skip_reason" not in d]
        skipped = [d for d in deps if "skip_reason" in d]
        for d in audited:
            for v in d.get("vulns") or []:
                fix = ", ".join(v.get("fix_versions") or []) or "no fixed version"
                print(f"VULNERABLE {d['name']} {d['version']}: {v['id']} (fixed in: {fix})")
        for d in skipped:
            print(f"not audited: {d['name']}: {d['skip_reason']}")
        print(
            f"pip-audit ({detail}): {len(audited)} packages audited, {len(skipped)} not, "
            f"{sum(len(d.get('vulns') or []) for d in audited)} known vulnerabilities"
        )
        return 1 if state == "vulnerable" else 0
    print("pip-audit: no vulnerability service is reachable from here, so NOTHING WAS AUDITED:")
    for n in notes:
        print(f"  {n}")
    if args.strict:
        print("failing (--strict)")
        return 3
    print("not failing (run with --strict where a service must be reachable, e.g. release CI)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
