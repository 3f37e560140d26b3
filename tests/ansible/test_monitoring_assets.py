"""The Prometheus alert rules and the Grafana dashboard dsg_monitoring ships.

roles/dsg_monitoring/files/prometheus/dsg-alerts.rules.yml is checked and unit-tested with
`promtool test rules` (tests/ansible/prometheus/*.test.yml: every alert fires when it should
and not before); roles/dsg_monitoring/files/grafana/dsg-dashboard.json is valid dashboard
JSON. Both may only use metrics the engine writes (found in engine/dsg's source: the
`Family(...)` names and the backup and drill textfiles' rows), and rate()/increase() only on
the ones it types as counters.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
from functools import cache

import pytest
import yaml

from tests.ansible.conftest import REPO

FILES = REPO / "roles" / "dsg_monitoring" / "files"
RULES = FILES / "prometheus" / "dsg-alerts.rules.yml"
DASHBOARD = FILES / "grafana" / "dsg-dashboard.json"
RULE_TESTS = sorted((REPO / "tests" / "ansible" / "prometheus").glob("*.test.yml"))
METRIC = re.compile(r"\b(dsg_[a-z0-9_]*[a-z0-9])\b")
COUNTER_FUNCTIONS = re.compile(r"\b(?:rate|irate|increase|resets)\s*\(\s*(dsg_[a-z0-9_]+)")
# Not dsg's: names a dashboard may use from elsewhere (none yet).
FOREIGN_METRICS: set[str] = set()


@cache
def engine_metrics() -> dict[str, str]:
    """{metric name: type} of every metric the engine writes, read from its source."""
    names: dict[str, str] = {}
    for path in (REPO / "engine" / "dsg").rglob("*.py"):
        src = path.read_text()
        if "Family" not in src:
            continue
        tree = ast.parse(src)
        for node in ast.walk(tree):
            value = node.value if isinstance(node, ast.Constant) else None
            if isinstance(value, str) and re.fullmatch(r"dsg_[a-z0-9_]*[a-z0-9]", value):
                names.setdefault(value, "gauge")
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Family":
                args = [a.value if isinstance(a, ast.Constant) else None for a in node.args]
                kinds = {k.arg: getattr(k.value, "value", None) for k in node.keywords}
                kind = args[2] if len(args) > 2 else kinds.get("type", "gauge")
                if args and isinstance(args[0], str) and isinstance(kind, str):
                    names[args[0]] = kind
    assert names, "no metric found in engine/dsg (did the metrics code move?)"
    return names


def rule_expressions() -> dict[str, str]:
    doc = yaml.safe_load(RULES.read_text())
    return {r["alert"]: r["expr"] for g in doc["groups"] for r in g["rules"] if "alert" in r}


def dashboard_expressions() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    for var in doc["templating"]["list"]:
        if isinstance(var.get("query"), dict):
            exprs.append(var["query"]["query"])
    return exprs


def check_names(where: str, exprs: list[str]) -> list[str]:
    known = engine_metrics()
    problems = []
    for expr in exprs:
        for name in METRIC.findall(expr):
            if name not in known and name not in FOREIGN_METRICS:
                problems.append(f"{where}: {name} is not a metric dsg writes ({expr})")
        for name in COUNTER_FUNCTIONS.findall(expr):
            if known.get(name) != "counter":
                problems.append(f"{where}: rate/increase of {name}, a {known.get(name)} ({expr})")
    return problems


def test_engine_metrics_are_found():
    known = engine_metrics()
    assert known["dsg_transactions_total"] == "counter"
    assert known["dsg_pool_capacity_ratio"] == "gauge"
    assert "dsg_backup_last_success_timestamp_seconds" in known  # a textfile row's name


def test_rules_and_dashboard_use_only_dsg_metrics():
    problems = check_names(RULES.name, list(rule_expressions().values()))
    problems += check_names(DASHBOARD.name, dashboard_expressions())
    assert not problems, "\n".join(problems)
    # the check itself: an unknown name and a rate() of a gauge are caught
    assert check_names("x", ["dsg_pool_capacity_percent > 1"])
    assert check_names("x", ["rate(dsg_pool_free_bytes[5m])"])


def test_dashboard_json():
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] == "dsg-overview" and doc["title"] and doc["schemaVersion"] >= 36
    variables = {v["name"] for v in doc["templating"]["list"]}
    assert {"datasource", "instance"} <= variables
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in doc["panels"]:
        assert {"h", "w", "x", "y"} <= set(p["gridPos"]), p["title"]
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
        if p["type"] == "row":
            continue
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["expr"].strip() and t["refId"], p["title"]
            assert t["datasource"]["uid"] == "${datasource}", p["title"]
            assert 'instance=~"$instance"' in t["expr"], (p["title"], t["expr"])
    covered = " ".join(dashboard_expressions())
    for needed in ("dsg_pool_capacity_ratio", "dsg_backup_success", "dsg_restore_drill_success"):
        assert needed in covered


def test_every_alert_has_a_firing_test():
    alerts = set(rule_expressions())
    fired = set()
    for path in RULE_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                if case.get("exp_alerts"):
                    fired.add(case["alertname"])
    assert alerts - fired == set(), f"alerts without a test that fires them: {alerts - fired}"


def test_promtool_checks_and_unit_tests_the_rules():
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    check = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    for path in RULE_TESTS:
        run = subprocess.run(
            [promtool, "test", "rules", path.name], cwd=path.parent,
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert run.returncode == 0, f"{path.name}:\n{run.stdout}{run.stderr}"
        assert "SUCCESS" in run.stdout


def test_promtool_test_fails_on_a_wrong_threshold(tmp_path):
    """The rule tests bite: with the capacity warning moved from 80 % to 86 %, tank (85 %
    full) no longer warns and `promtool test rules` fails."""
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    rules = tmp_path / "roles" / "dsg_monitoring" / "files" / "prometheus"
    rules.mkdir(parents=True)
    text = RULES.read_text().replace(
        "dsg_pool_capacity_ratio >= 0.80", "dsg_pool_capacity_ratio >= 0.86"
    )
    assert text != RULES.read_text()
    (rules / RULES.name).write_text(text)
    tests = tmp_path / "tests" / "ansible" / "prometheus"
    tests.mkdir(parents=True)
    shutil.copy(RULE_TESTS[0].parent / "dsg-alerts.test.yml", tests)
    run = subprocess.run(
        [promtool, "test", "rules", "dsg-alerts.test.yml"], cwd=tests,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = run.stdout + run.stderr
    assert run.returncode != 0 and "alertname: DsgPoolCapacityWarning" in out, out


def test_role_installs_rules_and_dashboard(ansible_tools, tmp_path):
    """tasks_from: assets on a Prometheus/Grafana host (here: this machine, connection
    local): the rules (validated by promtool) and the dashboard are installed, and a second
    run changes nothing."""
    if not shutil.which("promtool"):
        pytest.skip("promtool is not installed (Debian package prometheus)")
    import os

    if os.geteuid() != 0:
        pytest.skip("installs root-owned files: needs root")
    (tmp_path / "rules").mkdir()
    (tmp_path / "dashboards").mkdir()
    play = tmp_path / "assets.yml"
    play.write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.import_role: {name: dsg_monitoring, tasks_from: assets}\n"
    )
    extra = {
        "dsg_monitoring_prometheus_rules_dir": str(tmp_path / "rules"),
        "dsg_monitoring_promtool": shutil.which("promtool"),
        "dsg_monitoring_grafana_dashboards_dir": str(tmp_path / "dashboards"),
        "ansible_python_interpreter": "/usr/bin/python3",
    }
    args = ("-i", "localhost,", "-c", "local", str(play), "-e", json.dumps(extra))
    first = ansible_tools.run("ansible-playbook", *args)
    assert first.returncode == 0, first.explain()
    assert first.recap()["localhost"]["changed"] == 2, first.explain()
    assert (tmp_path / "rules" / RULES.name).read_text() == RULES.read_text()
    assert (tmp_path / "dashboards" / DASHBOARD.name).read_text() == DASHBOARD.read_text()
    again = ansible_tools.run("ansible-playbook", *args)
    assert again.returncode == 0 and again.recap()["localhost"]["changed"] == 0, again.explain()
