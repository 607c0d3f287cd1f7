"""KFP component: train (or load) the WordPiece tokenizer for a corpus.

Its parameters are the settings of `mlm.config.TokenizeConfig`, generated from the config
(`mlm_components.parameters`); the corpus is `corpus_uri`, and the output the `tokenizer` artifact.
"""

from mlm.config import TokenizeConfig
from mlm_components.parameters import settings_parameters, step_component
from mlm_components.tasks import TOKENIZE_NAMES

PARAMETERS = settings_parameters(TokenizeConfig, exclude=("corpus",), names=TOKENIZE_NAMES)
INPUTS = {"corpus_uri": "str", "corpus_fingerprint": "str", "tokenizer": "Output[Artifact]"}
SUMMARY = """Trains a WordPiece tokenizer on `corpus_uri` ("" = the built-in corpus; or loads
`pretrained_tokenizer_uri`) and writes the tokenizer directory as the `tokenizer` artifact. With
`cache_uri` (a lasting location), the first run keeps its tokenizer there and later runs adopt it
unless `retrain_tokenizer`. `corpus_fingerprint` (from the fingerprint component) is not used
here: it is part of the cache key, so a cached task is reused only while the corpus is
unchanged."""


tokenize = step_component(
    "tokenize",
    inputs=INPUTS,
    parameters=PARAMETERS,
    summary=SUMMARY,
    module=__name__,
)
