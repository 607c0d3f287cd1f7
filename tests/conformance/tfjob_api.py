"""The Kubeflow Training Operator's TFJob (kubeflow.org/v1) as v1.9.2 enforces it, built from
upstream's published API package and upstream rules written down with their source.

Kubeflow 1.10 ships the operator v1.9.2; 1.11 and 26.03 still carry its manifests but leave it
out of the default install (kubeflow/manifests v1.11.0 and 26.03 example/kustomization.yaml:
`# - ../applications/training-operator/upstream/overlays/kubeflow`).

- Schema: the `kubeflow-training` 1.9.2 models (PyPI, side environment `training-1.9.2`: the
  openapi-generator classes' `openapi_types` / `attribute_map`, with the `kubernetes` client's
  pod types), closed the way the CRD's structural schema is (kubeflow/trainer v1.9.2
  manifests/base/crds/kubeflow.org_tfjobs.yaml has no `x-kubernetes-preserve-unknown-fields`,
  and its pod templates' `metadata` keeps the five embedded ObjectMeta fields).
- Admission: the validating webhook of kubeflow/trainer v1.9.2
  pkg/webhooks/tensorflow/tfjob_webhook.go (`validateTFJob`).
"""

from __future__ import annotations

import re
from functools import cache

from tests.conformance.schema import Result, close_embedded_metadata, walk
from tests.conformance.upstream import run_in

VERSION = "1.9.2"
GROUP, API_VERSION = "kubeflow.org", "v1"
WEBHOOK = "validator.tfjob.training-operator.kubeflow.org"
# pkg/apis/kubeflow.org/v1/tensorflow_types.go: TFJobDefaultContainerName, the replica types.
CONTAINER = "tensorflow"
REPLICA_TYPES = ("PS", "Worker", "Chief", "Master", "Evaluator")

_SCHEMA_SCRIPT = """
import json, re
import kubernetes.client.models as core
import kubeflow.training.models as kf

PRIMITIVES = {"str": {"type": "string"}, "int": {"type": "integer"}, "bool": {"type": "boolean"},
              "float": {"type": "number"}, "datetime": {"type": "string"},
              "date": {"type": "string"}, "object": {},
              "Quantity": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
              "IntOrString": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}
defs = {}

def schema(text):
    text = text.strip()
    if m := re.fullmatch(r"(?:list|List)\\[(.*)\\]", text):
        return {"type": "array", "items": schema(m[1])}
    if m := re.fullmatch(r"(?:dict\\(str, ?|Dict\\[str, ?)(.*)[)\\]]", text):
        return {"type": "object", "additionalProperties": schema(m[1])}
    if text in PRIMITIVES:
        return PRIMITIVES[text]
    cls = getattr(kf, text, None) or getattr(core, text)
    if text not in defs:
        defs[text] = {}
        defs[text] = {"type": "object", "properties": {
            cls.attribute_map[name]: schema(kind) for name, kind in cls.openapi_types.items()}}
    return {"$ref": "#/$defs/" + text}

root = schema("KubeflowOrgV1TFJob")
print(json.dumps({**root, "$defs": defs}))
"""


@cache
def schema() -> dict:
    """The TFJob schema of the Training Operator v1.9.2."""
    raw = run_in(f"training-{VERSION}", _SCHEMA_SCRIPT)
    # In the kubernetes client's models IntOrString fields are `object`; resource quantities are
    # `dict(str, str)`, which the CRD's int-or-string would also take as numbers.
    return close_embedded_metadata(raw, [("spec", "tfReplicaSpecs", "*", "template")])


def check(job: dict) -> Result:
    """What the TFJob CRD's schema does with `job`."""
    return walk(job, schema())


_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def admission_errors(job: dict) -> list[str]:
    """Why the v1.9.2 webhook refuses TFJob `job` (kubeflow/trainer v1.9.2
    pkg/webhooks/tensorflow/tfjob_webhook.go `validateTFJob`, `validateSpec`)."""
    errors = []
    name = job["metadata"]["name"]
    if len(name) > 63 or not _DNS1035.match(name):
        errors.append(
            f"metadata.name: Invalid value: {name!r}: a DNS-1035 label must consist of lower "
            "case alphanumeric characters or '-', start with an alphabetic character, and end "
            "with an alphanumeric character"
        )
    specs = job["spec"].get("tfReplicaSpecs") or {}
    chiefs = 0
    for replica, spec in specs.items():
        where = f"spec.tfReplicaSpecs[{replica}]"
        chiefs += replica in ("Chief", "Master")  # replica types, not replicas
        containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
        if not containers:
            errors.append(f"{where}.template.spec.containers: Required value: must be specified")
            continue
        for index, container in enumerate(containers):
            if not container.get("image"):
                errors.append(
                    f"{where}.template.spec.containers[{index}].image: Required value: must be "
                    "required"
                )
        if not any(c.get("name") == CONTAINER for c in containers):
            errors.append(
                f"{where}.template.spec.containers: Required value: must have at least one "
                f"container with name {CONTAINER}"
            )
    managed_by = (job["spec"].get("runPolicy") or {}).get("managedBy")
    if managed_by not in (None, "kubeflow.org/training-operator", "kueue.x-k8s.io/multikueue"):
        # pkg/common/util/webhooks.go `ValidateRunPolicy`
        errors.append(f"spec.runPolicy.managedBy: Unsupported value: {managed_by!r}")
    if chiefs > 1:
        errors.append(
            "spec.tfReplicaSpecs: Forbidden: must not have more than 1 Chief or Master role"
        )
    return errors


def worker_pods(job: dict) -> list[dict]:
    """The pods the operator creates for `job`'s Worker replicas: the template plus the labels
    of kubeflow/trainer v1.9.2 pkg/controller.v1/common/pod.go and pkg/apis/kubeflow.org/v1
    (`training.kubeflow.org/job-name`, `replica-type`, `replica-index`, `job-role: master` on
    worker 0 when there is no chief)."""
    spec = job["spec"]["tfReplicaSpecs"]["Worker"]
    name = job["metadata"]["name"]
    pods = []
    for index in range(spec.get("replicas", 1)):
        template = spec["template"]
        labels = {
            **((template.get("metadata") or {}).get("labels") or {}),
            "training.kubeflow.org/operator-name": "tfjob-controller",
            "training.kubeflow.org/job-name": name,
            "training.kubeflow.org/replica-type": "worker",
            "training.kubeflow.org/replica-index": str(index),
        }
        if index == 0:
            labels["training.kubeflow.org/job-role"] = "master"
        pods.append(
            {
                "metadata": {
                    "name": f"{name}-worker-{index}",
                    "labels": labels,
                    "annotations": (template.get("metadata") or {}).get("annotations") or {},
                },
                "spec": template["spec"],
            }
        )
    return pods
