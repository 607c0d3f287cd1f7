"""mlm: masked-language-model pre-training of BERT-style encoders (Keras 3 on TensorFlow).

The public API is re-exported here lazily, so `import mlm` and the `mlm` command start without
importing TensorFlow. Accessing any Keras-backed name imports the modules that register the
package's serializable classes, so `keras.models.load_model` works on saved `.keras` files after
`from mlm import MaskedLanguageModel` (or any other model class).
"""

from __future__ import annotations

import importlib
from typing import Any

# The one definition of the version: pyproject.toml reads it, and the image tag is derived from it
# (the Makefile's TAG and the manifests' image tags are checked against it by tests/test_setup.py).
__version__ = "0.1.0"
IMAGE_REPOSITORY = "ghcr.io/mlm-project/mlm"
DEFAULT_IMAGE = f"{IMAGE_REPOSITORY}:{__version__}"
GPU_IMAGE_SUFFIX = "-gpu"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "MaskedLanguageModel": "mlm.model",
    "create_mlm_training_model": "mlm.model",
    "MLM_PRESETS": "mlm.model",
    "mask_tokens": "mlm.masking",
    "BERT": "mlm.encoders.bert",
    "load_hf_bert_checkpoint": "mlm.encoders.hf_checkpoint",
    "learning_rate_schedule_builder": "mlm.optimization",
    "optimizer_builder": "mlm.optimization",
    "visualize_mlm_predictions": "mlm.evaluation",
    "calculate_perplexity": "mlm.evaluation",
    "plot_training_curves": "mlm.evaluation",
    "create_nlp_head": "mlm.heads",
    "NLPTaskConfig": "mlm.heads",
    "NLPTaskType": "mlm.heads",
    "create_mlm_dataset": "mlm.data",
    "pretraining_dataset": "mlm.data",
}

# Modules holding @keras.saving.register_keras_serializable classes.
_SERIALIZABLE_MODULES = (
    "mlm.layers",
    "mlm.encoders.bert",
    "mlm.model",
    "mlm.heads",
    "mlm.optimization",
)

__all__ = sorted(_EXPORTS)


def register_serializables() -> None:
    """Import every module with Keras-serializable classes so `.keras` files load."""
    for module in _SERIALIZABLE_MODULES:
        importlib.import_module(module)


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'mlm' has no attribute {name!r}")
    register_serializables()
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
