"""Kubeflow Pipelines v2 components: one thin typed wrapper per `mlm.steps` function.

Each component's body imports its step inside the function (KFP ships only the function's source
to the container) and runs in the project image, `MLM_IMAGE` at compile time (default below).

The parameters of the step components (tokenize, shard, pretrain, evaluate, finetune) are
generated from their `mlm.config` classes (`mlm_components.parameters`: each function's source is
written from the settings, since KFP ships source to the pod), and their bodies run
`mlm_components.tasks`. The plumbing components (fingerprint, plan/merge-shards, export, publish,
cleanup) take artifacts and a few literal parameters. A KFP parameter cannot be None, so "not
set" is the type's empty value ("", 0, {}), which `mlm.config` reads as None.
"""

from __future__ import annotations

import os

from mlm import DEFAULT_IMAGE

# Read once, when the components are defined. `mlm pipeline compile --image ...` gives every task
# another image without it (`PipelineTask.set_container_image`).
MLM_IMAGE = os.environ.get("MLM_IMAGE") or DEFAULT_IMAGE
