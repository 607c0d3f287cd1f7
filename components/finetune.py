"""KFP component: fine-tune a classifier on the exported encoder (and a random-init baseline).

Its parameters are the settings of `mlm.config.FinetuneConfig`, generated from the config
(`mlm_components.parameters`); the labelled data is `labels_uri`, the encoder an input artifact.
"""

from mlm.config import FinetuneConfig
from mlm_components.parameters import settings_parameters, step_component
from mlm_components.tasks import FINETUNE_NAMES

PARAMETERS = settings_parameters(FinetuneConfig, names=FINETUNE_NAMES)
INPUTS = {
    "encoder": "Input[Model]",
    "labels_uri": "str",
    "classifier": "Output[Model]",
    "metrics": "Output[Metrics]",
    "confusion_matrix": "Output[ClassificationMetrics]",
    "report": "Output[Markdown]",
}
SUMMARY = """Fine-tunes a `task` model (sequence or token classification) on the labelled data at
`labels_uri` ("" = the built-in labelled set) starting from the `encoder` artifact; with
`baseline`, also trains the same architecture from random initialisation on the same data and
budget. Logs held-out accuracy and macro-F1 (entity F1 for NER) of both and the pretrained
model's confusion matrix."""


finetune = step_component(
    "finetune",
    inputs=INPUTS,
    parameters=PARAMETERS,
    summary=SUMMARY,
    module=__name__,
)
