"""KFP component: the partitions of the corpus the shard step fans out over."""

from kfp import dsl

from mlm_components import MLM_IMAGE


@dsl.component(base_image=MLM_IMAGE, install_kfp_package=False)
def plan_shards(corpus_uri: str, corpus_fingerprint: str, shard_partitions: int = 1) -> list:
    """Returns the partition numbers of the corpus at `corpus_uri` ("" = the built-in corpus):
    1 to `shard_partitions`, at most one per file (a file is never split). The pipeline runs a
    shard task for each. `corpus_fingerprint` only keys the cache."""
    from mlm.errors import install_excepthook

    install_excepthook("plan-shards")  # a known failure ends the step with one line, status 2

    from mlm.data.fingerprint import partition_count

    return list(range(1, partition_count(corpus_uri, shard_partitions) + 1))
