"""KFP component: the corpus fingerprint, which keys the cache of tokenize and shard."""

from kfp import dsl

from mlm_components import MLM_IMAGE


@dsl.component(base_image=MLM_IMAGE, install_kfp_package=False)
def fingerprint(corpus_uri: str) -> str:
    """Returns a digest of the corpus at `corpus_uri` ("" = the built-in corpus) from its
    listing: object names, sizes and generations / ETags / mtimes (nothing is read). The pipeline
    passes it to tokenize and shard, whose cache keys then change exactly when the corpus does;
    this task itself is never cached."""
    from mlm.data.fingerprint import corpus_fingerprint

    return corpus_fingerprint(corpus_uri)
