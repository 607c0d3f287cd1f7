"""KFP component: masked-LM perplexity and accuracy on the validation shards, with a report."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from components import MLM_IMAGE


@dsl.component(base_image=MLM_IMAGE, install_kfp_package=False)
def evaluate(
    model: Input[Model],
    shards: Input[Dataset],
    tokenizer: Input[Artifact],
    metrics: Output[Metrics],
    report: Output[Markdown],
    batch_size: int = 32,
    eval_batches: int = 0,
    seed: int = 0,
):
    """Scores the pre-trained model on `eval_batches` batches of the validation split (0: all;
    fixed mask seed) and writes the metrics (`perplexity`, `accuracy`, `loss`, `num_masked`) and
    a Markdown report with sample predictions. A model that continued pre-training from an
    earlier one (pretrain's `init_from`) is compared with that model on the same batches:
    `previous_perplexity`, `perplexity_change` (negative: better), ..."""
    from mlm.errors import install_excepthook

    install_excepthook("evaluate")  # a known failure ends the step with one line, status 2

    import shutil
    import tempfile

    from mlm.registry import initial_model
    from mlm.steps.evaluate import evaluate as run_evaluate

    with tempfile.TemporaryDirectory() as workdir:
        result = run_evaluate(
            model.path,
            shards.path,
            tokenizer.path,
            workdir,
            batch_size=batch_size,
            eval_batches=eval_batches,  # 0 = the whole split
            seed=seed,
            previous_model=initial_model(model.path) or "",  # "" = nothing to compare with
        )
        shutil.copyfile(result.report_path, report.path)
    for key, value in result.metrics.items():
        metrics.log_metric(key, value)
