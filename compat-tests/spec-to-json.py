#!/usr/bin/env python3
"""Converts the Engine API 1.41 swagger (YAML) into the JSON the compat replay
validates responses against: only `paths` and `definitions`, without prose and
examples. Run from the repo root:
    python3 compat-tests/spec-to-json.py /work/shared/reference/docker-engine-api-v1.41.yaml
"""
import json
import sys

import yaml

PROSE = {"description", "summary", "example", "examples", "x-go-name", "externalDocs"}


def strip(node, in_properties=False):
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            k = str(k)
            # In a `properties` map the keys are field names, never prose.
            if not in_properties and k in PROSE:
                continue
            out[k] = strip(v, in_properties=(k == "properties" and not in_properties))
        return out
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "/work/shared/reference/docker-engine-api-v1.41.yaml"
    dst = sys.argv[2] if len(sys.argv) > 2 else "compat-tests/engine-api-v1.41.json"
    with open(src) as f:
        spec = yaml.safe_load(f)
    out = {"swagger": spec.get("swagger"), "version": spec["info"]["version"],
           "paths": strip(spec["paths"]), "definitions": strip(spec["definitions"])}
    with open(dst, "w") as f:
        json.dump(out, f, indent=1, sort_keys=True, default=str)
        f.write("\n")


main()
