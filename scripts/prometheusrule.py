#!/usr/bin/env python3
"""Prints deploy/prometheus/alerts.yml as a Prometheus Operator PrometheusRule.

    scripts/prometheusrule.py > deploy/kubernetes/prometheusrule.yaml

The rule file is the source; the PrometheusRule is generated from it so the two cannot
drift (scripts/validate-deploy.sh regenerates it and fails on any difference).
"""
import os
import sys

import yaml

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

HEADER = """\
# GENERATED from deploy/prometheus/alerts.yml by scripts/prometheusrule.py; edit that
# file and regenerate:
#   scripts/prometheusrule.py > deploy/kubernetes/prometheusrule.yaml
# The same alert rules for the Prometheus Operator (needs its CRDs, like
# servicemonitor.yaml). kube-prometheus-stack selects rules labelled with its release
# name by default: add that label here, or set
# ruleSelectorNilUsesHelmValues=false. The rules expect job="tether", which the
# ServiceMonitor's jobLabel gives.
"""


class Dumper(yaml.SafeDumper):
    pass


def _str(dumper, value):
    # Multi-line PromQL stays a readable block, as in alerts.yml.
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


Dumper.add_representer(str, _str)


def main():
    with open(os.path.join(ROOT, "deploy", "prometheus", "alerts.yml")) as f:
        rules = yaml.safe_load(f)
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "tether",
            "labels": {
                "app.kubernetes.io/name": "tether",
                "app.kubernetes.io/component": "alerts",
            },
        },
        "spec": {"groups": rules["groups"]},
    }
    sys.stdout.write(HEADER)
    sys.stdout.write(yaml.dump(rule, Dumper=Dumper, sort_keys=False, width=10_000, default_flow_style=False, allow_unicode=True))


if __name__ == "__main__":
    main()
