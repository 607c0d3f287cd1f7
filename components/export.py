"""KFP component: export the encoder (.keras, SavedModel, tokenizer, model card)."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Metrics, Model, Output

from mlm_components import MLM_IMAGE


@dsl.component(base_image=MLM_IMAGE, install_kfp_package=False)
def export(
    model: Input[Model],
    tokenizer: Input[Artifact],
    evaluation: Input[Metrics],
    encoder: Output[Model],
):
    """Writes the pre-trained encoder as `encoder.keras` and a serving SavedModel, the tokenizer
    beside them and a model card (README.md) with the evaluation metrics."""
    from mlm.errors import install_excepthook

    install_excepthook("export")  # a known failure ends the step with one line, status 2

    from mlm.steps.export import export as run_export

    result = run_export(
        model.path,
        tokenizer.path,
        encoder.path,
        evaluation_metrics=dict(evaluation.metadata),
    )
    encoder.metadata.update(result.to_dict())
