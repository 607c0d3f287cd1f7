"""KFP component: join the shard step's partitions into the shard directory pretrain reads."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from mlm_components import MLM_IMAGE


@dsl.component(base_image=MLM_IMAGE, install_kfp_package=False)
def merge_shards(parts: Input[list[Dataset]], shards: Output[Dataset]):
    """Joins the `parts` written by the shard tasks of the fan-out (one partition each, collected
    with `dsl.Collected`) into one shard directory with one manifest, the `shards` artifact.
    Every file is checked against its partition's size and CRC32C."""
    from mlm.errors import install_excepthook

    install_excepthook("merge-shards")  # a known failure ends the step with one line, status 2

    from mlm.steps.merge_shards import merge_shards as run_merge

    result = run_merge([part.path for part in parts], shards.path)
    shards.metadata.update(result.to_dict())
