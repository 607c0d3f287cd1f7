"""The `mlm` command: one subcommand per pipeline step, plus `pipeline` for KFP servers.

Each subcommand lives in the module that implements it; that module provides
`add_cli_arguments(parser)` and `run_cli(args) -> int`, and imports TensorFlow only inside
`run_cli`, so `mlm --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from mlm.errors import UserInputError
from mlm.startup import quiet_tensorflow

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "tokenize": ("mlm.steps.tokenize", "train or load a WordPiece tokenizer for a corpus"),
    "shard": ("mlm.steps.shard", "pack a tokenized corpus into TFRecord shards"),
    "pretrain": ("mlm.steps.pretrain", "pre-train a masked language model on shards"),
    "evaluate": ("mlm.steps.evaluate", "perplexity and masked accuracy on validation shards"),
    "export": ("mlm.steps.export", "export the encoder (.keras, SavedModel, tokenizer, card)"),
    "finetune": ("mlm.steps.finetune", "fine-tune a classifier on an exported encoder"),
    "pipeline": ("mlm.kfp_client", "compile, submit or schedule the KFP pipeline"),
}


def build_parser() -> argparse.ArgumentParser:
    from mlm import __version__

    parser = argparse.ArgumentParser(
        prog="mlm", description="Masked-language-model pre-training for BERT-style encoders."
    )
    parser.add_argument("--version", action="version", version=f"mlm {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue  # step not available in this build
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        module.add_cli_arguments(sub)
        sub.set_defaults(_run=module.run_cli)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    quiet_tensorflow()  # before any step imports TensorFlow
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except UserInputError as error:
        print(f"mlm {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mlm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
