#!/usr/bin/env python3
"""A stand-in for `helm template`, for machines without the helm CLI.

Renders a chart offline with Helm's own Go SDK through the helm-python-sdk
package (`pip install helm-python-sdk`: a wheel that carries Helm v4's
library, no helm binary and no network needed), and prints the manifests as
`helm template` does. Only what collector/tests/deploy_manifests.rs uses:

    helm-template.py template [NAME] CHART [--namespace NS] [--set K=V]...

The test runs it when $HELM names it:

    HELM=$PWD/deploy/helm/helm-template.py cargo test -p tidewatch-collector --test deploy_manifests
"""

import argparse
import sys

import helm_python as helm


def merge(into, values):
    """Deep-merges `values` into `into`, as repeated --set flags combine."""
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value
    return into


def main():
    parser = argparse.ArgumentParser(prog="helm-template.py")
    parser.add_argument("command", choices=["template"])
    parser.add_argument("names", nargs="+", metavar="[NAME] CHART")
    parser.add_argument("--namespace", "-n", default="default")
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    if len(args.names) > 2:
        parser.error("expected [NAME] CHART")
    name, chart_path = (args.names if len(args.names) == 2 else ["release-name", args.names[0]])

    values = {}
    for expression in args.set:
        merge(values, helm.parse_set_string(expression))

    with helm.Chart.load(chart_path) as chart:
        rendered = chart.render(values=values, name=name, namespace=args.namespace, is_install=True)
    for path in sorted(rendered):
        manifest = rendered[path]
        if path.endswith("NOTES.txt") or not manifest.strip():
            continue
        sys.stdout.write(f"---\n# Source: {path}\n{manifest.strip()}\n")


if __name__ == "__main__":
    main()
