"""`make compile`: write the pipeline's IR YAML (`pipelines/mlm_pretraining_pipeline.yaml`).

Usage: python -m pipelines.compile [--output YAML] [--image IMAGE] [--gpu-node-selector KEY=VALUE]

`--image` sets the container image of every step (default: $MLM_IMAGE or
`mlm.DEFAULT_IMAGE`, the image of this version), and so of the TrainJob/TFJob workers the
pretrain step launches (its "-gpu" tag for GPU workers; the run parameter `worker_image`
overrides that); `--gpu-node-selector` pins the pretrain pod to a GPU node pool. Both are
compile-time: a KFP runtime parameter cannot change a step's own image or node selector.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mlm.kfp_client import DEFAULT_PACKAGE as DEFAULT_OUTPUT


def compile_pipeline(
    output: str = DEFAULT_OUTPUT, image: str | None = None, gpu_node_selector: str | None = None
) -> str:
    """Compiles `mlm_pretraining_pipeline` to `output` (written under a temporary name, then
    renamed) and returns the path.

    Args:
        output: YAML file to write.
        image: Container image for every step (None: $MLM_IMAGE or the default image).
        gpu_node_selector: "key=value" node selector for the pretrain pod (None:
            $MLM_GPU_NODE_SELECTOR or none).
    """
    if image:
        os.environ["MLM_IMAGE"] = image
    if gpu_node_selector:
        os.environ["MLM_GPU_NODE_SELECTOR"] = gpu_node_selector
    from kfp import compiler

    from pipelines.mlm_pipeline import mlm_pretraining_pipeline

    output_path = Path(output)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    # The compiler insists on a .yaml suffix, so the temporary name keeps it.
    partial = output_path.with_name(f".{output_path.stem}.partial{output_path.suffix}")
    try:
        compiler.Compiler().compile(mlm_pretraining_pipeline, package_path=str(partial))
        os.replace(partial, output_path)
    finally:
        partial.unlink(missing_ok=True)
    return str(output_path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    parser.add_argument("--image", default=None)
    parser.add_argument("--gpu-node-selector", default=None, metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    print(compile_pipeline(args.output, image=args.image, gpu_node_selector=args.gpu_node_selector))
    return 0


if __name__ == "__main__":
    sys.exit(main())
