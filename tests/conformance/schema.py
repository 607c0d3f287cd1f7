"""Structural-schema checks the way the Kubernetes API server applies a CRD's schema.

A custom resource's schema decides what the API server keeps: a field the schema does not know is
pruned on create (kept out of the stored object, with only a warning) unless the client asks for
`fieldValidation=Strict`, in which case the request fails with `strict decoding error: unknown
field "<path>"` (kubernetes/apiextensions-apiserver, pkg/registry/customresource; the client
option is documented in kubernetes-client/python's `create_namespaced_custom_object`). A value of
the wrong type is refused (HTTP 422).

`walk(value, schema)` applies a JSON schema (the subset the upstream API packages generate:
`$ref` / `$defs`, `anyOf` with null, objects with `properties` or `additionalProperties`, arrays,
strings, integers, numbers, booleans) and returns the pruned value and the problems. An object
schema that lists `properties` and no `additionalProperties` is closed, as a CRD's structural
schema is; `additionalProperties: {...}` is a map; an object schema with neither keeps anything
(`x-kubernetes-preserve-unknown-fields`).

Embedded ObjectMeta: controller-gen's `generateEmbeddedObjectMeta` keeps only `annotations`,
`finalizers`, `labels`, `name` and `namespace` of a pod or job template's `metadata` (seen in
kubeflow/trainer v2.3.0 manifests/base/crds/trainer.kubeflow.org_clustertrainingruntimes.yaml
and kubeflow/trainer v1.9.2 manifests/base/crds/kubeflow.org_tfjobs.yaml): `EMBEDDED_METADATA`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

EMBEDDED_METADATA = {
    "type": "object",
    "properties": {
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "name": {"type": "string"},
        "namespace": {"type": "string"},
    },
}

# Kubernetes' int-or-string types (a CRD schema marks them `x-kubernetes-int-or-string: true`);
# the API packages generate them as empty models.
INT_OR_STRING = {"anyOf": [{"type": "string"}, {"type": "integer"}]}
INT_OR_STRING_DEFS = (
    "IoK8sApimachineryPkgApiResourceQuantity",
    "IoK8sApimachineryPkgUtilIntstrIntOrString",
)

_TYPES = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


@dataclass
class Result:
    """What the API server would do with an object.

    Attributes:
        pruned: the object as stored without strict validation (unknown fields removed).
        unknown: the paths of unknown fields (`spec.runtimePatches`, `a.b[0].c`).
        invalid: type errors, as `<path>: Invalid value: ...` lines.
    """

    pruned: Any
    unknown: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)

    def strict_error(self) -> str:
        """The API server's message for a strict create with unknown fields."""
        return "strict decoding error: " + ", ".join(f'unknown field "{p}"' for p in self.unknown)


def _resolve(schema: dict, defs: dict) -> dict:
    while "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[-1]]
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return _resolve(schema["allOf"][0], defs)
    return schema


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _walk(value: Any, schema: dict, defs: dict, path: str, result: Result) -> Any:
    schema = _resolve(schema, defs)
    branches = schema.get("anyOf") or schema.get("oneOf")
    if branches:
        options = [_resolve(b, defs) for b in branches]
        if value is None and any(o.get("type") == "null" for o in options):
            return None
        trials = []
        for option in options:
            if option.get("type") == "null":
                continue
            trial = Result(None)
            trial.pruned = _walk(value, option, defs, path, trial)
            trials.append(trial)
        best = min(trials, key=lambda t: len(t.invalid) * 1000 + len(t.unknown))
        result.unknown += best.unknown
        result.invalid += best.invalid
        return best.pruned
    kind = schema.get("type")
    if kind is None or value is None:
        return value
    if kind == "null":
        result.invalid.append(f"{path}: Invalid value: must be null")
        return value
    wanted = _TYPES.get(kind, ())
    if not isinstance(value, wanted) or (kind in ("integer", "number") and isinstance(value, bool)):
        result.invalid.append(
            f"{path}: Invalid value: {value!r}: {path} in body must be of type {kind}"
        )
        return value
    if kind == "array":
        items = schema.get("items") or {}
        return [_walk(v, items, defs, f"{path}[{i}]", result) for i, v in enumerate(value)]
    if kind != "object":
        return value
    properties = schema.get("properties")
    extra = schema.get("additionalProperties")
    if properties is None and extra in (None, True):
        return copy.deepcopy(value)  # preserves unknown fields
    kept = {}
    for key, item in value.items():
        where = _join(path, key)
        if properties and key in properties:
            kept[key] = _walk(item, properties[key], defs, where, result)
        elif isinstance(extra, dict):
            kept[key] = _walk(item, extra, defs, where, result)
        elif extra is True:
            kept[key] = copy.deepcopy(item)
        else:
            result.unknown.append(where)
    return kept


def walk(value: Any, schema: dict) -> Result:
    """Applies `schema` (with its `$defs`) to `value`: see the module docstring."""
    result = Result(None)
    result.pruned = _walk(value, schema, schema.get("$defs", {}), "", result)
    return result


def with_int_or_string(schema: dict) -> dict:
    """`schema` with Kubernetes' quantity and int-or-string definitions as `INT_OR_STRING`."""
    schema = copy.deepcopy(schema)
    for name in INT_OR_STRING_DEFS:
        if name in schema.get("$defs", {}):
            schema["$defs"][name] = copy.deepcopy(INT_OR_STRING)
    return schema


def close_embedded_metadata(schema: dict, paths: list[tuple[str, ...]]) -> dict:
    """A copy of `schema` whose `metadata` at each property path (`*` for array items or map
    values) is the CRD's embedded ObjectMeta (`EMBEDDED_METADATA`)."""
    schema = copy.deepcopy(schema)
    defs = schema.get("$defs", {})
    for names in paths:
        node = schema
        for name in names:
            node = _inline(node, defs)
            if name == "*":
                node = node.get("items") or node.get("additionalProperties")
            else:
                node = node["properties"][name]
        _inline(node, defs)["properties"]["metadata"] = EMBEDDED_METADATA
    return schema


def _inline(node: dict, defs: dict) -> dict:
    """Makes `node` hold its own copy of what its `$ref` / single `anyOf` branch points to, so a
    change below it touches only this path; returns the object schema."""
    while True:
        if "$ref" in node:
            target = copy.deepcopy(defs[node.pop("$ref").rsplit("/", 1)[-1]])
            node.update(target)
            continue
        branches = [b for b in node.get("anyOf", []) if b.get("type") != "null"]
        if len(branches) == 1 and "type" not in node:
            node.pop("anyOf")
            node.update(copy.deepcopy(branches[0]))
            continue
        return node
