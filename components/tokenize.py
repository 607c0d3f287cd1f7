"""KFP component: train (or load) the WordPiece tokenizer for a corpus.

Its parameters are the settings of `mlm.config.TokenizeConfig`, generated from the config
(`mlm_components.parameters`); the corpus is `corpus_uri`, and the output the `tokenizer` artifact.
"""

from kfp import dsl

from mlm.config import TokenizeConfig
from mlm_components import MLM_IMAGE
from mlm_components.parameters import define, runtime_body, settings_parameters
from mlm_components.tasks import TOKENIZE_NAMES

PARAMETERS = settings_parameters(TokenizeConfig, exclude=("corpus",), names=TOKENIZE_NAMES)
INPUTS = {"corpus_uri": "str", "corpus_fingerprint": "str", "tokenizer": "Output[Artifact]"}
SUMMARY = """Trains a WordPiece tokenizer on `corpus_uri` ("" = the built-in corpus; or loads
`pretrained_tokenizer_uri`) and writes the tokenizer directory as the `tokenizer` artifact. With
`cache_uri` (a lasting location), the first run keeps its tokenizer there and later runs adopt it
unless `retrain_tokenizer`. `corpus_fingerprint` (from the fingerprint component) is not used
here: it is part of the cache key, so a cached task is reused only while the corpus is
unchanged."""


tokenize = dsl.component(base_image=MLM_IMAGE, install_kfp_package=False)(
    define(
        "tokenize",
        inputs=INPUTS,
        parameters=PARAMETERS,
        summary=SUMMARY,
        body=runtime_body("run_tokenize"),
        namespace={"__name__": __name__},
    )
)
