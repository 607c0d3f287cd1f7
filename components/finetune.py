"""KFP component: fine-tune a classifier on the exported encoder (and a random-init baseline)."""

from kfp import dsl
from kfp.dsl import ClassificationMetrics, Input, Markdown, Metrics, Model, Output

from components import MLM_IMAGE


@dsl.component(base_image=MLM_IMAGE, install_kfp_package=False)
def finetune(
    encoder: Input[Model],
    labels_uri: str,
    classifier: Output[Model],
    metrics: Output[Metrics],
    confusion_matrix: Output[ClassificationMetrics],
    report: Output[Markdown],
    task: str = "text_classification",
    validation_uri: str = "",
    validation_fraction: float = 0.2,
    max_seq_length: int = 128,
    batch_size: int = 16,
    epochs: int = 10,
    learning_rate: float = 1e-3,
    baseline: bool = True,
    seed: int = 0,
):
    """Fine-tunes a `task` model (sequence or token classification) on the labelled data at
    `labels_uri` ("" = the built-in labelled set) starting from the `encoder` artifact; with
    `baseline`, also trains the same architecture from random initialisation on the same data
    and budget. Logs held-out accuracy and macro-F1 (entity F1 for NER) of both and the
    pretrained model's confusion matrix."""
    from mlm.errors import install_excepthook

    install_excepthook("finetune")  # a known failure ends the step with one line, status 2

    import os
    import tempfile

    from mlm import storage
    from mlm.steps.finetune import finetune as run_finetune

    if not labels_uri:  # the built-in labelled set
        from mlm.data.default_corpus import write_default_labels

        labels_uri = write_default_labels(os.path.join(tempfile.mkdtemp(), "labels.csv"))
    result = run_finetune(
        encoder.path,
        labels_uri,
        classifier.path,
        task=task,
        validation_data=validation_uri,  # "" = split the labelled data
        validation_fraction=validation_fraction,
        max_seq_length=max_seq_length,
        batch_size=batch_size,
        epochs=epochs,
        learning_rate=learning_rate,
        baseline=baseline,
        seed=seed,
    )
    for key, value in result.flat_metrics().items():
        metrics.log_metric(key, value)
    if result.confusion_matrix is not None:
        confusion_matrix.log_confusion_matrix(result.label_names, result.confusion_matrix)
    storage.write_text(report.path, storage.read_text(result.report_path))
