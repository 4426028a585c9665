#!/usr/bin/env python3
"""Checks the Grafana dashboard against a daemon's /metrics (run by tests/integration/metrics_test.cc).

Every metric name a panel's expression (or a template variable's query) uses must be one the
exposition has: a family (# TYPE) or a sample name, where NAME_bucket, NAME_sum and NAME_count are
a histogram family's. Every label a selector or a `by (...)` names must be one of that metric's
labels in the exposition (where it has samples). So the dashboard cannot drift from the daemon.

The staging cache's families (pororoca_staging_*) are exposed only by a daemon with [staging]
configured: when the exposition has none of them they are listed as not checked; when it has one,
all the dashboard's are required.

  dashboard_check.py DASHBOARD.json METRICS.txt
"""
import json
import re
import sys

STAGING = "pororoca_staging_"
NAME = re.compile(r"\bpororoca_[a-zA-Z0-9_:]*")
SELECTOR = re.compile(r"(pororoca_[a-zA-Z0-9_:]*)\{([^}]*)\}")
BY = re.compile(r"\bby \(([^)]*)\)\s*\((?:[a-z_]+\()*\s*(pororoca_[a-zA-Z0-9_:]*)")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
PROMETHEUS_LABELS = {"instance", "job", "le"}


def exposition(text):
    """(families: name -> type, labels: sample or family name -> set of label names)."""
    families, labels = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            families[name] = kind
        elif line and not line.startswith("#"):
            m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? ", line)
            if not m:
                continue
            names = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', m.group(3) or ""))
            labels.setdefault(m.group(1), set()).update(names)
    return families, labels


def family_of(name, families):
    if name in families:
        return name
    for suffix in HISTOGRAM_SUFFIXES:
        base = name[: -len(suffix)]
        if name.endswith(suffix) and families.get(base) == "histogram":
            return base
    return None


def expressions(dashboard):
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield f"panel '{panel.get('title')}'", target["expr"]
    for var in dashboard.get("templating", {}).get("list", []):
        q = var.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if isinstance(q, str) and "pororoca_" in q:
            yield f"variable '{var.get('name')}'", q


def main():
    dashboard = json.load(open(sys.argv[1]))
    families, labels = exposition(open(sys.argv[2]).read())
    staging_exposed = any(f.startswith(STAGING) for f in families)
    problems, used, unchecked = [], set(), set()
    for where, expr in expressions(dashboard):
        for name in NAME.findall(expr):
            used.add(name)
            if family_of(name, families) is None:
                if name.startswith(STAGING) and not staging_exposed:
                    unchecked.add(name)
                else:
                    problems.append(f"{where}: {name} is not in the exposition")
        wanted = [(m.group(1), re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*=~?", m.group(2)))
                  for m in SELECTOR.finditer(expr)]
        wanted += [(m.group(2), [l.strip() for l in m.group(1).split(",")]) for m in BY.finditer(expr)]
        for name, names in wanted:
            have = labels.get(name)
            if have is None:
                continue  # no samples to compare with (reported above if the family is missing)
            for label in names:
                if label not in have and label not in PROMETHEUS_LABELS:
                    problems.append(f"{where}: {name} has no label '{label}' (it has {sorted(have)})")
    if not used:
        problems.append("the dashboard uses no pororoca metric")
    print(f"{len(used)} metric names used, {len(used) - len(unchecked)} checked against the exposition")
    for name in sorted(unchecked):
        print(f"not checked (no [staging] on this daemon): {name}")
    print(f"{len(problems)} problem(s)")
    for p in problems:
        print("FAIL " + p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
