"""KFP component: train (or load) the WordPiece tokenizer for a corpus."""

from kfp import dsl
from kfp.dsl import Artifact, Output

from components import MLM_IMAGE


@dsl.component(base_image=MLM_IMAGE, install_kfp_package=False)
def tokenize(
    corpus_uri: str,
    corpus_fingerprint: str,
    tokenizer: Output[Artifact],
    vocab_size: int = 8000,
    lowercase: bool = True,
    pretrained_tokenizer_uri: str = "",
    cache_uri: str = "",
    retrain_tokenizer: bool = False,
):
    """Trains a WordPiece tokenizer on `corpus_uri` (or loads `pretrained_tokenizer_uri`) and
    writes the tokenizer directory as the `tokenizer` artifact. With `cache_uri` (a lasting
    location), the first run keeps its tokenizer there and later runs adopt it unless
    `retrain_tokenizer`. `corpus_fingerprint` (from the fingerprint component) is not used here:
    it is part of the cache key, so a cached task is reused only while the corpus is unchanged."""
    from mlm.errors import install_excepthook

    install_excepthook("tokenize")  # a known failure ends the step with one line, status 2

    from mlm import storage

    # The store the next steps and the training workers use: fail now if it cannot be.
    storage.check_store(tokenizer.uri)

    from mlm.steps.tokenize import tokenize as run_tokenize

    result = run_tokenize(
        corpus_uri,  # "" = the built-in corpus
        tokenizer.path,
        vocab_size=vocab_size,
        lowercase=lowercase,
        tokenizer=pretrained_tokenizer_uri,  # "" = train one
        cache_dir=cache_uri,  # "" = none
        retrain=retrain_tokenizer,
    )
    tokenizer.metadata.update({**result.to_dict(), "corpus_fingerprint": corpus_fingerprint})
