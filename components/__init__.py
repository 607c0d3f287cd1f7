"""Kubeflow Pipelines v2 components: one thin typed wrapper per `mlm.steps` function.

Each component's body imports its step inside the function (KFP ships only the function's source
to the container) and runs in the project image, `MLM_IMAGE` at compile time (default below).

Parameter defaults are literals (KFP reads them from the signature) and equal the settings'
defaults in `mlm.config` (tests/test_config.py checks it); a KFP parameter cannot be None, so
"not set" is the type's empty value ("", 0, {}), which `mlm.config` reads as None.
"""

from __future__ import annotations

import os

from mlm import DEFAULT_IMAGE

# Read once, when the components are defined. `mlm pipeline compile --image ...` gives every task
# another image without it (`PipelineTask.set_container_image`).
MLM_IMAGE = os.environ.get("MLM_IMAGE") or DEFAULT_IMAGE
