"""`make compile`: write the pipeline's IR YAML (`pipelines/mlm_pretraining_pipeline.yaml`).

Usage: python pipelines/compile.py [--output YAML] [--image IMAGE] [--gpu-node-selector KEY=VALUE]
       [--kfp-version {2.5,2.15,2.16}] [--store-secret NAME] [--store-endpoint URL]

The settings are `mlm.config.CompileConfig`'s (`mlm pipeline compile` takes the same flags).
`--image` sets the container image of every step and so of the TrainJob/TFJob workers the pretrain
step launches (its "-gpu" tag for GPU workers; the run parameter `worker_image` overrides that);
`--gpu-node-selector` pins the pretrain pod to a GPU node pool. `--kfp-version` names the backend
the YAML is for: KFP 2.5 (Kubeflow 1.10) predates TaskConfig, so its YAML leaves it out.
`--store-secret` / `--store-endpoint` give every step the artifact store (docs/operators.md, "The
artifact store").
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from mlm.config import CompileConfig, add_arguments, from_args

# Where the pipeline spec has TaskConfig (kubeflow/pipelines PR #12185, first in 2.15.0): the
# pretrain component's `taskConfigPassthroughs` and its input of parameterType TASK_CONFIG.
TASK_CONFIG = "TASK_CONFIG"


def for_kfp_2_5(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The compiled `documents` (pipeline spec, platform spec) as KFP 2.5 decodes them.

    KFP 2.5's protos (kfp-pipeline-spec 0.6.0, kfp-kubernetes 1.5.0) have no TaskConfig (the
    pretrain component's `taskConfigPassthroughs` and its TASK_CONFIG input) and no `optional` on
    a Secret as env, and the backend decodes an upload strictly, so any of them fails the upload.
    The pretrain step keeps working: KFP's executor hands a TaskConfig input that the backend did
    not send over as an empty one (kfp `dsl/executor.py`), and the step passes the store to its
    workers on its own (`mlm.launch.kubernetes.store_env_vars`).
    """
    spec, *platforms = documents
    for component in spec.get("components", {}).values():
        component.pop("taskConfigPassthroughs", None)
        parameters = component.get("inputDefinitions", {}).get("parameters", {})
        for name in [n for n, p in parameters.items() if p.get("parameterType") == TASK_CONFIG]:
            del parameters[name]
    for platform in platforms:
        kubernetes = platform.get("platforms", {}).get("kubernetes", {})
        for executor in kubernetes.get("deploymentSpec", {}).get("executors", {}).values():
            for secret in executor.get("secretAsEnv", []):
                secret.pop("optional", None)
    return [spec, *platforms]


def compile_pipeline(config: CompileConfig | str | None = None, **settings: Any) -> str:
    """Compiles `mlm_pretraining_pipeline` as `config` sets it (a `CompileConfig`, or the output
    path with further settings as keywords) and returns the path of the YAML, which is written
    under a temporary name, then renamed."""
    if not isinstance(config, CompileConfig):
        if config is not None:
            settings["output"] = config
        config = CompileConfig.create(**settings)
    from kfp import compiler

    from mlm_pipelines.mlm_pipeline import make_pipeline

    output_path = Path(config.output)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    # The compiler insists on a .yaml suffix, so the temporary name keeps it.
    partial = output_path.with_name(f".{output_path.stem}.partial{output_path.suffix}")
    try:
        compiler.Compiler().compile(make_pipeline(config), package_path=str(partial))
        if config.kfp_version == "2.5":
            documents = for_kfp_2_5(list(yaml.safe_load_all(partial.read_text())))
            partial.write_text(yaml.safe_dump_all(documents, sort_keys=False))
        os.replace(partial, output_path)
    finally:
        partial.unlink(missing_ok=True)
    return str(output_path)


def main(argv: list[str] | None = None) -> int:
    from mlm.errors import install_excepthook

    install_excepthook("compile")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, CompileConfig)
    print(compile_pipeline(from_args(CompileConfig, parser.parse_args(argv))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
