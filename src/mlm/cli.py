"""The `mlm` command: one subcommand per pipeline step, plus `pipeline` for KFP servers.

A step's flags come from its settings class in `mlm.config` (one flag per setting, and
`--config FILE.yaml`); the step's module runs it (`run_cli(config) -> int`). `pretrain` goes
through the local launcher, which trains in this process or starts `--workers` processes.
TensorFlow is imported only when a step runs, so `mlm --help` stays fast.

A known failure (bad input, a corrupt file, an unreachable server) is one line on stderr and exit
status 2; `mlm --debug COMMAND ...` prints its traceback too (see `mlm.errors`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from mlm import config as settings
from mlm.errors import DEBUG_ENV, report
from mlm.startup import private_tempdir, quiet_tensorflow

# subcommand -> (settings class, "module:function" that runs it, one-line help)
STEPS: dict[str, tuple[type[settings.Config], str, str]] = {
    "tokenize": (
        settings.TokenizeConfig,
        "mlm.steps.tokenize:run_cli",
        "train or load a WordPiece tokenizer for a corpus",
    ),
    "shard": (
        settings.ShardConfig,
        "mlm.steps.shard:run_cli",
        "pack a tokenized corpus into TFRecord shards",
    ),
    "merge-shards": (
        settings.MergeShardsConfig,
        "mlm.steps.merge_shards:run_cli",
        "join the partitions written by `mlm shard --partition` into one shard directory",
    ),
    "pretrain": (
        settings.PretrainLaunchConfig,
        "mlm.cli:run_pretrain",
        "pre-train a masked language model on shards",
    ),
    "evaluate": (
        settings.EvaluateConfig,
        "mlm.steps.evaluate:run_cli",
        "perplexity and masked accuracy on validation shards",
    ),
    "export": (
        settings.ExportConfig,
        "mlm.steps.export:run_cli",
        "export the encoder (.keras, SavedModel, tokenizer, card)",
    ),
    "finetune": (
        settings.FinetuneConfig,
        "mlm.steps.finetune:run_cli",
        "fine-tune a classifier on an exported encoder",
    ),
}
# subcommand -> (module with add_cli_arguments(parser) and run_cli(args), one-line help)
TOOLS: dict[str, tuple[str, str]] = {
    "pipeline": ("mlm.kfp_client", "compile, submit or schedule the KFP pipeline"),
}


class OneLineErrorParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, like every other `mlm` error (the
    usage of a step runs to dozens of lines; `--help` shows it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    from mlm import __version__

    parser = OneLineErrorParser(
        prog="mlm", description="Masked-language-model pre-training for BERT-style encoders."
    )
    parser.add_argument("--version", action="version", version=f"mlm {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="print the full traceback of an error, not just its one-line message",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (config_class, _runner, help_text) in STEPS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        settings.add_arguments(sub, config_class)
    for name, (module_name, help_text) in TOOLS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue  # not available in this build
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        module.add_cli_arguments(sub)
        sub.set_defaults(_run=module.run_cli)
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.command in STEPS:
        config_class, runner, _help = STEPS[args.command]
        config = settings.from_args(config_class, args)
        module_name, function = runner.split(":")
        return int(getattr(importlib.import_module(module_name), function)(config) or 0)
    return int(args._run(args) or 0)


def run_pretrain(config: settings.PretrainLaunchConfig) -> int:
    """Runs `mlm pretrain` (here, as `config.workers` local processes, or as a cluster job:
    `config.job.launcher`); the exit status."""
    from mlm import launch
    from mlm.training.loop import TrainingDivergedError

    # A failed worker is reported by `main` (`mlm.errors.report`): its one-line error, status 2,
    # when it refused its input, else its log tail, status 1.
    try:
        launch.pretrain(config)
    except TrainingDivergedError as error:
        print(f"mlm pretrain: error: {error}", file=sys.stderr)
        return 3
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    quiet_tensorflow()  # before any step imports TensorFlow
    parser = build_parser()
    args: Any = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.debug:
        os.environ[DEBUG_ENV] = "1"  # also for the worker processes a launcher starts
    previous_handler = signal.signal(signal.SIGTERM, _terminate)
    try:
        with private_tempdir():
            return _run(args)
    except Terminated:
        print(f"mlm {args.command}: terminated (SIGTERM)", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"mlm {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # known failures: one line, status 2; bugs: traceback, status 1
        return report(error, args.command)
    finally:
        signal.signal(signal.SIGTERM, previous_handler)


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a pod's deletion) as an exception, like SIGINT's KeyboardInterrupt: the
    command unwinds, so temporary folders and half-built outputs are removed before it exits
    with status 143. Pre-training installs its own handler, which saves a checkpoint first."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated()


if __name__ == "__main__":
    sys.exit(main())
