"""KFP component: publish the run's model to the model registry (for continual pre-training)."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Metrics, Model

from mlm_components import MLM_IMAGE


@dsl.component(base_image=MLM_IMAGE, install_kfp_package=False)
def publish(
    model: Input[Model],
    evaluation: Input[Metrics],
    tokenizer: Input[Artifact],
    model_registry_uri: str = "",
    model_name: str = "",
    run_id: str = "",
) -> str:
    """Registers the `model` artifact as the newest model named `model_name` in
    `model_registry_uri` (`mlm.registry.publish`: `<registry>/<name>/latest.json` and a
    create-only `runs/<run_id>.json`), with its step count and evaluated perplexity, so that a
    later run with `init_from="registry:<name>"` continues from it. Returns the model's URI;
    does nothing (returns "") unless both `model_registry_uri` and `model_name` are set."""
    if not model_registry_uri or not model_name:
        return ""
    from mlm.registry import publish as publish_model

    entry = publish_model(
        model_registry_uri,
        model_name,
        model_uri=model.uri,
        run_id=run_id,
        perplexity=evaluation.metadata.get("perplexity"),
        tokenizer_uri=tokenizer.uri,
    )
    return entry.model_uri
