"""KFP component: pack the tokenized corpus into TFRecord shards."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from components import MLM_IMAGE


@dsl.component(base_image=MLM_IMAGE, install_kfp_package=False)
def shard(
    corpus_uri: str,
    corpus_fingerprint: str,
    tokenizer: Input[Artifact],
    shards: Output[Dataset],
    max_seq_length: int = 128,
    num_shards: int = 8,
    line_by_line: bool = False,
    partition: int = 0,
    partitions: int = 1,
    cache_uri: str = "",
):
    """Tokenizes `corpus_uri` with the `tokenizer` artifact and writes train/validation TFRecord
    shards plus `manifest.json` as the `shards` artifact (`line_by_line`: one padded example per
    line instead of packing); with `partition` (1 to `partitions`; 0 = the whole corpus) only that
    partition of the corpus's files, for merge_shards. With `cache_uri` (a lasting location), each
    input file is sharded once into a part kept there, and later runs shard only new or changed
    files. `corpus_fingerprint` (from the fingerprint component) only keys KFP's cache: cached
    shards are reused only while the corpus is unchanged."""
    from mlm.errors import install_excepthook

    install_excepthook("shard")  # a known failure ends the step with one line, status 2

    from mlm import storage

    # The store the next steps and the training workers use: fail now if it cannot be.
    storage.check_store(shards.uri)

    from mlm.steps.shard import shard as run_shard

    result = run_shard(
        corpus_uri,  # "" = the built-in corpus
        tokenizer.path,
        shards.path,
        max_seq_length=max_seq_length,
        num_shards=num_shards,
        line_by_line=line_by_line,
        partition=partition,  # 0 = the whole corpus
        partitions=partitions,
        cache_dir=cache_uri,  # "" = none
    )
    shards.metadata.update({**result.to_dict(), "corpus_fingerprint": corpus_fingerprint})
