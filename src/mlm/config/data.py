"""The settings of the data steps: `mlm tokenize`, `mlm shard` and `mlm merge-shards`."""

from __future__ import annotations

from mlm.config.base import Config, dataclass, setting

LAYOUTS = ("lines", "documents")
# Object-store shard files an input pipeline holds on local disk while training streams them
# (`mlm.data.streaming`): enough to fetch the next ones while one is read.
INPUT_WINDOW_FILES = 4


@dataclass
class CorpusConfig(Config):
    """Where the text comes from and how it is read (`mlm.data.corpus.read_units`)."""

    corpus: list[str] | None = setting(
        None,
        "text files, directories, globs, .gz files or gs:// / s3:// prefixes (none: the built-in corpus "
        "of Python standard-library docstrings)",
    )
    layout: str = setting(
        "lines",
        "lines: one sentence per line; documents: documents separated by blank lines",
        choices=LAYOUTS,
    )
    strict_utf8: bool = setting(False, "fail on invalid UTF-8 instead of replacing it")
    clean: bool = setting(False, "strip HTML and MediaWiki markup first")


@dataclass
class TokenizeConfig(CorpusConfig):
    """`mlm tokenize`: train a WordPiece tokenizer on a corpus, or adopt an existing one."""

    output_dir: str = setting(
        help="tokenizer directory to write (local or object store)", flag="--output"
    )
    vocab_size: int = setting(8000, "vocabulary size, special tokens included", at_least=1)
    lowercase: bool = setting(True, "uncased: lowercase and strip accents (--no-lowercase: cased)")
    tokenizer: str | None = setting(
        None,
        "adopt this tokenizer (a transformers directory or a vocab.txt) instead of training one",
    )
    min_frequency: int = setting(2, "minimum count of a merged WordPiece", at_least=1)
    sample_bytes: int | None = setting(
        100_000_000,
        "train the vocabulary on a reproducible sample of about this many stored bytes of the "
        "corpus, drawn from every file by a hash of each line/document, so the trainer's memory "
        "stays bounded however large the corpus is (0: all the text)",
        at_least=0,
    )
    cache_dir: str | None = setting(
        None,
        "a lasting directory (local or object store) for recurring runs: the first run saves its "
        "tokenizer there and later runs adopt it instead of training again, so that shard parts "
        "cached in the same directory stay valid (see --retrain; a --tokenizer given is used "
        "as it is)",
    )
    retrain: bool = setting(
        False,
        "with --cache-dir: train a new tokenizer even though one is cached, and cache it instead "
        "(every shard part cached with the old one is then made again)",
    )

    def check(self) -> str | None:
        if self.retrain and not self.cache_dir:
            return "retrain: only means something with cache_dir (the tokenizer it would replace)"
        return None


@dataclass
class ShardConfig(CorpusConfig):
    """`mlm shard`: tokenize a corpus into packed TFRecord shards."""

    tokenizer_dir: str = setting(
        help="tokenizer directory (from `mlm tokenize`)", flag="--tokenizer"
    )
    output_dir: str = setting(
        help="shard directory to write (local or object store)", flag="--output"
    )
    max_seq_length: int = setting(128, "tokens per example, [CLS] and [SEP] included", at_least=3)
    num_shards: int = setting(8, "TFRecord files per split", at_least=1)
    validation_fraction: float = setting(
        0.05,
        "share of lines/documents held out, chosen by content hash (0: no validation split)",
        at_least=0,
        below=1,
    )
    line_by_line: bool = setting(False, "one padded example per line instead of packing")
    compression: str | None = setting(None, "compress the shards: gzip", choices=(None, "gzip"))
    min_words: int = setting(1, "skip lines/documents with fewer words", at_least=0)
    max_words: int | None = setting(None, "skip lines/documents with more words (0: no limit)")
    processes: int = setting(
        1,
        "shard partitions of the corpus's files in this many processes, then join them (each "
        "partition writes num_shards files per split; at most one process per file)",
        at_least=1,
    )
    partitions: int = setting(1, "with --partition: how many (at most one per file)", at_least=1)
    partition: int | None = setting(
        None,
        "write only this partition (1 to partitions) of the corpus's files, by size, for `mlm "
        "merge-shards` to join (a pod per partition; unset: the whole corpus)",
        at_least=0,
    )
    cache_dir: str | None = setting(
        None,
        "a lasting directory (local or object store) for recurring runs: each input file is "
        "sharded once into a part kept there under its name, size and version; a later run "
        "reuses the parts of unchanged files and shards only new or changed ones (the same "
        "directory as tokenize's --cache-dir)",
    )

    def check(self) -> str | None:
        if self.partition is not None and self.partition > self.partitions:
            return (
                f"partition={self.partition}: must be at most partitions={self.partitions} "
                "(partitions are numbered from 1)"
            )
        if self.partition is not None and self.processes > 1:
            return "partition and processes: shard one partition per process, not both at once"
        return None


@dataclass
class MergeShardsConfig(Config):
    """`mlm merge-shards`: join the partitions written by `mlm shard --partition`."""

    parts: list[str] = setting(
        help="the directories of every partition (local or object store), in any order"
    )
    output_dir: str = setting(
        help="shard directory to write (local or object store)", flag="--output"
    )
