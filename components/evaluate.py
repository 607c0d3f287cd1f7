"""KFP component: masked-LM perplexity and accuracy on the validation shards, with a report.

Its parameters are the settings of `mlm.config.EvaluateConfig`, generated from the config
(`mlm_components.parameters`); the model, shards and tokenizer are input artifacts.
"""

from mlm.config import EvaluateConfig
from mlm_components.parameters import settings_parameters, step_component

# The model to compare with is the one the model artifact continued from (its `init_from`).
PARAMETERS = settings_parameters(EvaluateConfig, exclude=("previous_model",))
INPUTS = {
    "model": "Input[Model]",
    "shards": "Input[Dataset]",
    "tokenizer": "Input[Artifact]",
    "metrics": "Output[Metrics]",
    "report": "Output[Markdown]",
}
SUMMARY = """Scores the pre-trained model on `eval_batches` batches of the `split` (0: all; fixed
mask seed) and writes the metrics (`perplexity`, `accuracy`, `loss`, `num_masked`) and a Markdown
report with sample predictions. A model that continued pre-training from an earlier one
(pretrain's `init_from`) is compared with that model on the same batches: `previous_perplexity`,
`perplexity_change` (negative: better), ..."""


evaluate = step_component(
    "evaluate",
    inputs=INPUTS,
    parameters=PARAMETERS,
    summary=SUMMARY,
    module=__name__,
)
