#!/usr/bin/env python3
"""Every query of a Grafana dashboard is valid PromQL that returns data from a real Prometheus.

usage: dashboard_check.py PROMETHEUS_URL DASHBOARD_JSON [--timeout S] [--var NAME=VALUE ...]

Collects each panel's targets[].expr (panels nested in rows too), replaces the template
variables ($name, ${name}, ${name:format}, [[name]]) and sends each query to PROMETHEUS_URL's
/api/v1/query. Fails (exit 1, naming the panel and the query) when a query is refused (status
not "success": bad PromQL), returns an empty result, or uses a variable it has no value for;
also when the dashboard has no panels, or a panel (other than a row or text panel) has no
targets or a target no expr. An empty result is asked again, once a second, until --timeout
seconds have passed since the start: rate() over [1m] has no value until Prometheus holds two
samples of the series.
"""
import argparse
import json
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

# What the test's daemon serves: two volumes, no tenant (so any tenant, the dashboard's "All").
DEFAULT_VARS = {
    "volume": "vol0|other",  # a regex: the dashboard matches it with =~
    "tenant": ".*",
    "__rate_interval": "1m",
    "__interval": "15s",
}
NO_TARGETS = {"row", "text"}  # panel types that query nothing
VAR_RE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]|\$(\w+)")


def panels_of(panels):
    """Every panel, depth first; a (collapsed) row's own panels after the row."""
    for p in panels:
        yield p
        yield from panels_of(p.get("panels") or [])


def substitute(expr, variables):
    """expr with its template variables replaced; raises KeyError naming an unknown one."""

    def one(m):
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in variables:
            raise KeyError(name)
        return variables[name]

    return VAR_RE.sub(one, expr)


def query(base, expr):
    """(permanent, problem): problem is None when the query returned data; permanent when asking
    again cannot help (Prometheus refused the query)."""
    data = urllib.parse.urlencode({"query": expr}).encode()
    try:
        with urllib.request.urlopen(base.rstrip("/") + "/api/v1/query", data, timeout=10) as r:
            body = json.load(r)
    except urllib.error.HTTPError as e:  # 400 bad_data, 422 execution: a JSON error body
        try:
            body = json.load(e)
        except ValueError:
            return False, f"HTTP {e.code}"
    except (urllib.error.URLError, OSError, ValueError) as e:
        return False, f"no answer: {e}"
    if body.get("status") != "success":
        return True, f"status {body.get('status')}: {body.get('errorType')}: {body.get('error')}"
    result = body["data"]["result"]
    if body["data"]["resultType"] in ("vector", "matrix") and not result:
        return False, "empty result"
    return None, None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("prometheus", help="base URL, e.g. http://127.0.0.1:9090")
    ap.add_argument("dashboard", help="the dashboard's JSON file")
    ap.add_argument("--timeout", type=float, default=30,
                    help="seconds to keep asking queries that return nothing (default 30)")
    ap.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                    help="a template variable's value (adds to or replaces the defaults)")
    args = ap.parse_args()
    variables = dict(DEFAULT_VARS)
    for v in args.var:
        name, sep, value = v.partition("=")
        if not sep:
            ap.error(f"--var {v}: wanted NAME=VALUE")
        variables[name] = value

    with open(args.dashboard) as f:
        dash = json.load(f)
    panels = list(panels_of(dash.get("panels") or []))
    failures = []  # (panel title, expr, why)
    queries = []  # (panel title, expr as sent)
    for p in panels:
        title = p.get("title", "(untitled)")
        if p.get("type") in NO_TARGETS:
            continue
        targets = p.get("targets") or []
        if not targets:
            failures.append((title, "", "panel has no targets"))
        for t in targets:
            expr = t.get("expr", "")
            if not expr.strip():
                failures.append((title, "", f"target {t.get('refId', '?')} has no expr"))
                continue
            try:
                queries.append((title, substitute(expr, variables)))
            except KeyError as e:
                failures.append((title, expr, f"no value for the variable ${e.args[0]}"))
    if not panels:
        failures.append(("(dashboard)", "", "no panels"))
    elif not queries and not failures:
        failures.append(("(dashboard)", "", "no queries"))

    deadline = time.monotonic() + args.timeout
    pending = queries
    answered = 0
    while pending:
        again = []
        for title, expr in pending:
            permanent, problem = query(args.prometheus, expr)
            if problem is None:
                answered += 1
                continue
            if permanent:
                failures.append((title, expr, problem))
            else:
                again.append((title, expr, problem))
        if not again or time.monotonic() >= deadline:
            failures += again
            break
        pending = [(title, expr) for title, expr, _ in again]
        time.sleep(1)

    for title, expr, why in failures:
        print(f"FAIL panel '{title}': {why}" + (f"\n  expr: {expr}" if expr else ""))
    print(f"dashboard_check: {len(panels)} panels, {len(queries)} queries, {answered} returned "
          f"data, {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
