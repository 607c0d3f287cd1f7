"""Kubeflow Pipelines v2 components: one thin typed wrapper per `mlm.steps` function.

Each component's body imports its step inside the function (KFP ships only the function's source
to the container) and runs in the project image, `MLM_IMAGE` at compile time (default below).

The pretrain component's parameters are generated from `mlm.config.PretrainLaunchConfig`
(`mlm_components.parameters`: its function's source is written from the settings, since KFP ships
source to the pod). The other components declare theirs as literals, equal to the settings'
defaults (tests/test_config.py checks it). A KFP parameter cannot be None, so "not set" is the
type's empty value ("", 0, {}), which `mlm.config` reads as None.
"""

from __future__ import annotations

import os

from mlm import DEFAULT_IMAGE

# Read once, when the components are defined. `mlm pipeline compile --image ...` gives every task
# another image without it (`PipelineTask.set_container_image`).
MLM_IMAGE = os.environ.get("MLM_IMAGE") or DEFAULT_IMAGE
