#!/usr/bin/env python3
"""Lists, per response shoal owns, the fields the newest Engine API spec has
and the 1.41 spec lacks: shoal drops them for clients of API 1.41 and older
(src/api/shape.rs), as an engine of that version never writes them.
Run from the repo root after changing either spec:
    python3 compat-tests/api-additions.py \
        /work/shared/reference/docker-engine-api-v1.41.yaml \
        /work/shared/reference/docker-engine-api-v1.55.yaml
Writes src/api/shape/additions-1.41.json: {"GET /path": node}, where a node
is {"drop": [field…], "fields": {field: node}, "items": node, "values": node}
and only nodes with something to drop are written. Fields neither spec
lists (the engine writes a few, e.g. a service's PreviousSpec) are kept.
"""
import json
import sys

import yaml

OWNED = ["/swarm", "/nodes", "/nodes/{id}", "/services", "/services/{id}",
         "/tasks", "/tasks/{id}", "/secrets", "/secrets/{id}", "/configs",
         "/configs/{id}"]


def resolve(spec, schema):
    while isinstance(schema, dict) and "$ref" in schema:
        schema = spec["definitions"][schema["$ref"].split("/")[-1]]
    return schema or {}


def properties(spec, schema):
    schema = resolve(spec, schema)
    props = dict(schema.get("properties", {}))
    for part in schema.get("allOf", []):
        props.update(properties(spec, part))
    return props


# Fields engine 1.41 writes though its spec does not document them: the
# swagger lagged the Go types (TaskStatus.PortStatus dates from 17.x).
UNDOCUMENTED_IN_1_41 = {"PortStatus"}


def diff(old_spec, old, new_spec, new, depth=0):
    old, new = resolve(old_spec, old), resolve(new_spec, new)
    if depth > 12:
        return None
    node = {}
    if new.get("type") == "array" or "items" in new:
        sub = diff(old_spec, old.get("items", {}), new_spec, new.get("items", {}), depth + 1)
        if sub:
            node["items"] = sub
    if isinstance(new.get("additionalProperties"), dict):
        sub = diff(old_spec, old.get("additionalProperties", {}), new_spec,
                   new["additionalProperties"], depth + 1)
        if sub:
            node["values"] = sub
    old_props, new_props = properties(old_spec, old), properties(new_spec, new)
    if old_props:
        drop = sorted(k for k in new_props
                      if k not in old_props and k not in UNDOCUMENTED_IN_1_41)
        if drop:
            node["drop"] = drop
    fields = {}
    for k, schema in new_props.items():
        if k in old_props:
            sub = diff(old_spec, old_props[k], new_spec, schema, depth + 1)
            if sub:
                fields[k] = sub
    if fields:
        node["fields"] = fields
    return node


def response(spec, path):
    responses = spec["paths"][path]["get"]["responses"]
    return (responses.get(200) or responses.get("200"))["schema"]


def main():
    old_path, new_path = sys.argv[1], sys.argv[2]
    dst = sys.argv[3] if len(sys.argv) > 3 else "src/api/shape/additions-1.41.json"
    old, new = yaml.safe_load(open(old_path)), yaml.safe_load(open(new_path))
    out = {}
    for path in OWNED:
        node = diff(old, response(old, path), new, response(new, path))
        if node:
            out["GET " + path] = node
    with open(dst, "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
        f.write("\n")


main()
