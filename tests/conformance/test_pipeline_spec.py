"""The compiled pipeline against each supported KFP backend's own protos (`pipeline_spec`): the
YAML `mlm pipeline compile --kfp-version V` writes is one backend V accepts, and the facts that
made the option necessary hold."""

import pytest
import yaml

from mlm_pipelines.compile import compile_pipeline
from tests.conformance.pipeline_spec import BACKENDS, upload_errors


def compiled(tmp_path, **settings):
    path = compile_pipeline(str(tmp_path / "pipeline.yaml"), **settings)
    with open(path) as f:
        return list(yaml.safe_load_all(f))


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_yaml_for_each_backend_is_one_it_accepts(tmp_path, backend):
    assert upload_errors(backend, compiled(tmp_path, kfp_version=backend)) == []


def test_the_default_yaml_is_refused_by_kfp_2_5_for_task_config_and_the_optional_secret(tmp_path):
    # Fact: TaskConfig (parameterType TASK_CONFIG, taskConfigPassthroughs) is first in
    # kubeflow/pipelines 2.15.0 (PR #12185; api/v2alpha1/pipeline_spec.proto: absent at 2.5.0 and
    # 2.14.3), and SecretAsEnv.optional is absent from kubernetes_platform/proto at 2.5.0.
    errors = upload_errors("2.5", compiled(tmp_path))
    assert any("Invalid enum value TASK_CONFIG" in error for error in errors), errors
    assert any('"kfp_kubernetes.SecretAsEnv" has no field named "optional"' in e for e in errors)
    # Newer backends take the YAML for an older one: 2.5's YAML is a subset.
    documents = compiled(tmp_path, kfp_version="2.5")
    assert upload_errors("2.15", documents) == upload_errors("2.16", documents) == []


def test_unknown_fields_are_refused_so_the_check_can_fail(tmp_path):
    documents = compiled(tmp_path)
    documents[0]["components"]["comp-pretrain"]["notAField"] = True
    executors = documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    executors["exec-pretrain"]["secretAsEnv"][0]["keyToEnv"][0]["notAField"] = 1
    errors = upload_errors("2.16", documents)
    assert len(errors) == 2 and all("notAField" in error for error in errors), errors
