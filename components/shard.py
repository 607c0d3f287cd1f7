"""KFP component: pack the tokenized corpus into TFRecord shards.

Its parameters are the settings of `mlm.config.ShardConfig`, generated from the config
(`mlm_components.parameters`); the corpus is `corpus_uri`, the tokenizer an input artifact and the
output the `shards` artifact.
"""

from mlm.config import ShardConfig
from mlm_components.parameters import settings_parameters, step_component
from mlm_components.tasks import SHARD_NAMES

PARAMETERS = settings_parameters(ShardConfig, exclude=("corpus",), names=SHARD_NAMES)
INPUTS = {
    "corpus_uri": "str",
    "corpus_fingerprint": "str",
    "tokenizer": "Input[Artifact]",
    "shards": "Output[Dataset]",
}
SUMMARY = """Tokenizes `corpus_uri` ("" = the built-in corpus) with the `tokenizer` artifact and
writes train/validation TFRecord shards plus `manifest.json` as the `shards` artifact
(`line_by_line`: one padded example per line instead of packing); with `partition` (1 to
`partitions`; 0 = the whole corpus) only that partition of the corpus's files, for merge_shards.
With `cache_uri` (a lasting location), each input file is sharded once into a part kept there,
and later runs shard only new or changed files. `corpus_fingerprint` (from the fingerprint
component) only keys KFP's cache: cached shards are reused only while the corpus is
unchanged."""


shard = step_component(
    "shard",
    inputs=INPUTS,
    parameters=PARAMETERS,
    summary=SUMMARY,
    module=__name__,
)
