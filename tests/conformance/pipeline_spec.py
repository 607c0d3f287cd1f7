"""What each supported KFP backend accepts as an uploaded pipeline, from upstream's published
protos: `kfp-pipeline-spec` and `kfp-kubernetes` at the backend's own version (side environments
`kfp-<version>`; tests/conformance/upstream-packages.txt says which and why).

The backend decodes an upload with Go's protojson, whose default rejects unknown fields and
unknown enum names (kubeflow/pipelines <tag> backend/src/apiserver/template/v2_template.go →
`protojson.Unmarshal`). Python's `json_format.ParseDict` with its default
(`ignore_unknown_fields=False`) rejects the same, so it stands in for the backend here.
"""

from __future__ import annotations

from typing import Any

from tests.conformance.upstream import run_in

# KFP backend → its side environment.
BACKENDS = {"2.5": "kfp-2.5.0", "2.15": "kfp-2.15.0", "2.16": "kfp-2.16.0"}

# The pb2 modules are loaded by path: the packages' __init__ import the KFP SDK, which the side
# environment leaves out.
_PARSE_SCRIPT = """
import importlib.util, json, os, pathlib, sys, types
from google.protobuf import json_format
root = pathlib.Path(os.environ["PYTHONPATH"])  # the side environment (upstream.run_in)
def load(name, path):
    spec = importlib.util.spec_from_file_location(name, root / path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
for package in ("kfp", "kfp.pipeline_spec", "kfp.kubernetes"):
    sys.modules[package] = types.ModuleType(package)
pipeline_spec_pb2 = load("kfp.pipeline_spec.pipeline_spec_pb2", "kfp/pipeline_spec/pipeline_spec_pb2.py")
sys.modules["kfp.pipeline_spec"].pipeline_spec_pb2 = pipeline_spec_pb2
k8s_pb2 = load("kfp.kubernetes.kubernetes_executor_config_pb2",
               "kfp/kubernetes/kubernetes_executor_config_pb2.py")
documents = json.load(sys.stdin)
errors = []
def parse(value, message, where):
    try:
        json_format.ParseDict(value, message)
    except json_format.ParseError as error:
        errors.append(f"{where}: {error}")
parse(documents[0], pipeline_spec_pb2.PipelineSpec(), "pipeline spec")
for document in documents[1:]:
    platforms = document.get("platforms", {})
    executors = platforms.get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})
    for name, config in executors.items():
        parse(config, k8s_pb2.KubernetesExecutorConfig(), f"kubernetes executor {name}")
    parse(document, pipeline_spec_pb2.PlatformSpec(), "platform spec")
print(json.dumps(errors))
"""


def upload_errors(backend: str, documents: list[dict[str, Any]]) -> list[str]:
    """Why KFP `backend` would refuse the compiled pipeline `documents` (the pipeline spec, then
    its platform spec): one line per document the backend's protos do not decode; [] = none."""
    return run_in(BACKENDS[backend], _PARSE_SCRIPT, documents, isolated=True)
