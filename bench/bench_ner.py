"""CoNLL-2003 named-entity recognition in `make bench-quality`: a task that needs context.

On `<data>/conll2003/` (train.txt, valid.txt, test.txt; CoNLL-2003 columns, the NER tag last):
token-classification heads fine-tuned on 200 and 2,000 training sentences (`mlm finetune --task
ner`) from the pre-trained encoder and from random initialisation of the same architecture, with
the same procedures (`--ner-procedures`) and seeds (`downstream`). Early stopping and every
choice (procedure) use a dev split of `valid.txt`; `test.txt` is scored once per run and reported
for the procedure the dev split chose. The score is entity-level F1 (an entity counts when its
span and type match).
"""

from __future__ import annotations

import multiprocessing
import random
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from downstream import (
    PROCEDURES,
    best_against_best,
    finetune_run,
    mean_over_seeds,
    one_thread,
    target_verdict,
)

METRIC = "entity_f1"
TARGET_GAIN_POINTS = {200: 10, 2000: 5}  # pre-trained over random init, entity-F1 points


def read_sentences(path: Path) -> list[str]:
    """The sentences of a CoNLL file as text blocks (one `token ... tag` line per word),
    `-DOCSTART-` lines left out."""
    blocks, lines = [], []
    for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        if not line.strip() or line.startswith("-DOCSTART-"):
            if lines:
                blocks.append("\n".join(lines))
                lines = []
            continue
        lines.append(line)
    return blocks


def write_sentences(blocks: list[str], path: Path) -> str:
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return str(path)


def words_text(data: Path) -> list[str]:
    """The CoNLL training sentences as plain lines of words (their tags left out): pre-training
    text from the task's own domain, without its labels."""
    return [
        " ".join(line.split()[0] for line in block.splitlines())
        for block in read_sentences(data / "conll2003" / "train.txt")
    ]


def ner_slices(args, export_dir: str, data: Path, workdir: Path) -> dict[str, Any]:
    """{sentences: {procedure: {pretrained, baseline, seconds}}, "best": {...}} on CoNLL-2003.

    The training slices are the first sentences of one shuffle of train.txt (the 200 within the
    2,000); the dev split is `args.ner_dev_sentences` sentences of valid.txt; test.txt is scored
    whole. Runs go to `args.finetune_processes` processes at a time.
    """
    train = read_sentences(data / "conll2003" / "train.txt")
    random.Random(0).shuffle(train)
    dev = read_sentences(data / "conll2003" / "valid.txt")
    random.Random(1).shuffle(dev)
    dev_path = write_sentences(dev[: args.ner_dev_sentences], workdir / "ner-dev.txt")
    test_path = str(data / "conll2003" / "test.txt")
    jobs: dict[tuple[int, str], list] = {}
    with ProcessPoolExecutor(
        args.finetune_processes,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=one_thread,
    ) as pool:
        for count in args.ner_sentences:
            train_path = write_sentences(train[:count], workdir / f"ner-train-{count}.txt")
            for name in args.ner_procedures:
                jobs[count, name] = [
                    pool.submit(
                        finetune_run,
                        export_dir,
                        train_path,
                        str(workdir / f"ner-{count}-{name}-seed{seed}"),
                        {
                            **PROCEDURES[name],
                            "task": "ner",
                            "seed": seed,
                            "validation_data": dev_path,
                            "test_data": test_path,
                            "max_seq_length": args.ner_seq_length,
                        },
                    )
                    for seed in range(args.seeds)
                ]
        results: dict[str, Any] = {"slices": {count: {} for count in args.ner_sentences}}
        for (count, name), futures in jobs.items():
            runs = [future.result() for future in futures]
            results["slices"][count][name] = {
                "settings": PROCEDURES[name],
                **mean_over_seeds(runs, METRIC),
                "seconds": sum(run["seconds"] for run in runs),
            }
            side = results["slices"][count][name]
            print(
                f"[bench-quality] ner {count} sentences, {name}: entity F1 pretrained "
                f"{side['pretrained'][METRIC]:.3f}, baseline {side['baseline'][METRIC]:.3f}",
                flush=True,
            )
    results["best"] = {
        count: best_against_best(by_procedure, METRIC)
        for count, by_procedure in results["slices"].items()
    }
    results["dev_sentences"] = min(args.ner_dev_sentences, len(dev))
    results["test_sentences"] = len(read_sentences(Path(test_path)))
    return results


def report(args, ner: dict[str, Any]) -> list[str]:
    """The CoNLL-2003 section of quality.md."""
    text = (
        f"Token classification on {', '.join(map(str, args.ner_sentences))} training sentences "
        f"of train.txt; procedure and early stopping on {ner['dev_sentences']} sentences of "
        f"valid.txt; scored once on test.txt ({ner['test_sentences']} sentences); mean of "
        f"{args.seeds} seed(s); {args.ner_seq_length} word pieces per sentence."
    )
    if args.ner_pretrain_text:
        text += " The pre-training text included the CoNLL training sentences' words (no tags)."
    lines = [
        "",
        "### CoNLL-2003 named entities (entity F1)",
        "",
        text,
        "",
        "| sentences | procedure | pre-trained (dev) | random init (dev) | pre-trained test | "
        "random init test |",
        "|---|---|---|---|---|---|",
    ]
    for count, by_procedure in ner["slices"].items():
        for name, side in by_procedure.items():
            lines.append(
                f"| {count} | {name} | {side['pretrained'][f'validation_{METRIC}']:.3f} | "
                f"{side['baseline'][f'validation_{METRIC}']:.3f} | "
                f"{side['pretrained'][METRIC]:.3f} | {side['baseline'][METRIC]:.3f} |"
            )
    lines += [
        "",
        "Best against best (each side's procedure chosen on the dev sentences):",
        "",
        "| sentences | pre-trained | random init | gain (points) | target | procedures tried "
        "per side |",
        "|---|---|---|---|---|---|",
    ]
    for count, best in ner["best"].items():
        verdict = target_verdict(best["gain_points"], TARGET_GAIN_POINTS.get(int(count)))
        lines.append(
            f"| {count} | {best['pretrained'][METRIC]:.3f} ({best['pretrained']['procedure']}) "
            f"| {best['baseline'][METRIC]:.3f} ({best['baseline']['procedure']}) "
            f"| {best['gain_points']:+.1f} | {verdict} | {best['tried']} |"
        )
    return lines
