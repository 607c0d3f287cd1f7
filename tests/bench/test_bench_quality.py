"""bench/bench_quality.py without the shared real-text data (the benchmark itself needs it and
`make bench-quality`): per-class slices, the ridge linear probe, the no-data skip, seed averaging,
and a few-step pre-training run on made-up lines (line-by-line shards, real-token counts)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))  # as the script runs
import bench_ner
import bench_quality


def test_per_class_slices_are_disjoint_and_balanced():
    rows = [(f"t{i}", "ab"[i % 2]) for i in range(20)]
    dev = bench_quality.per_class(rows, 2)
    train = bench_quality.per_class(rows, 3, skip=2)
    assert [label for _, label in dev].count("a") == 2 and len(dev) == 4
    assert [label for _, label in train].count("b") == 3 and len(train) == 6
    assert not set(dev) & set(train)


def test_ridge_probe_separates_separable_features_and_not_noise():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    informative = np.eye(3)[labels] * 3 + rng.normal(size=(300, 3))
    noise = rng.normal(size=(300, 3))
    train, test = slice(0, 200), slice(200, 300)
    assert (
        bench_quality.ridge_probe(
            informative[train], labels[train], informative[test], labels[test], 3
        )
        > 0.9
    )
    assert (
        bench_quality.ridge_probe(noise[train], labels[train], noise[test], labels[test], 3) < 0.5
    )


def test_without_the_data_it_writes_a_note_and_succeeds(tmp_path, monkeypatch):
    argv = ["bench_quality.py", "--data", str(tmp_path / "none"), "--output", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    assert bench_quality.main() == 0
    assert "Skipped: no real-text data" in (tmp_path / "quality.md").read_text()


def test_best_against_best_chooses_on_the_dev_rows_and_reports_the_test_score():
    def scores(pretrained, baseline):
        # (dev accuracy, test accuracy) per side
        return {
            side: {"validation_accuracy": dev, "accuracy": test}
            for side, (dev, test) in (("pretrained", pretrained), ("baseline", baseline))
        }

    best = bench_quality.best_against_best(
        {
            "probe-then-tune": scores((0.62, 0.57), (0.40, 0.61)),
            "tune": scores((0.55, 0.60), (0.50, 0.52)),
        }
    )
    # Chosen on dev: probe-then-tune for pre-trained, tune for random init, although their test
    # scores would pick the other procedure on each side.
    assert best["pretrained"] == {
        "procedure": "probe-then-tune",
        "validation_accuracy": 0.62,
        "accuracy": 0.57,
    }
    assert best["baseline"] == {"procedure": "tune", "validation_accuracy": 0.50, "accuracy": 0.52}
    assert abs(best["gain_points"] - 5.0) < 1e-9
    assert best["tried"] == 2


def test_bag_of_embeddings_is_the_mean_of_a_texts_rows():
    table = np.arange(40, dtype=np.float32).reshape(20, 2)

    class Tokenizer:
        def __call__(self, texts, **_):
            return {"input_ids": [[int(t) for t in text.split()] for text in texts]}

    bag = bench_quality.bag_of_embeddings(table, Tokenizer(), ["2 3", "11", ""], 8)
    assert np.allclose(bag, [table[[2, 3]].mean(0), table[11], [0, 0]])


def test_both_tasks_run_every_procedure_and_one_of_them_is_mlm_finetune_without_flags():
    import downstream

    from mlm.config import FinetuneConfig

    assert list(downstream.PROCEDURES) == [
        "tune", "tune-3e-4", "probe-then-tune", "probe-then-tune-3e-4"
    ]  # fmt: skip
    # Each names every setting it varies, so none depends on the defaults of the day.
    assert {frozenset(settings) for settings in downstream.PROCEDURES.values()} == {
        frozenset({"head_only_epochs", "learning_rate"})
    }
    default = downstream.default_procedure()
    assert default == "probe-then-tune"
    settings = FinetuneConfig.create(encoder_dir="e", data="d", output_dir="o")
    for key, value in downstream.PROCEDURES[default].items():
        assert getattr(settings, key) == value
    assert settings.pooling == "mean"  # what the AG News runs use, the procedures not naming it
    # What the benchmark runs by default on CoNLL-2003: that procedure and plain fine-tuning at
    # its rate; on AG News plain fine-tuning at the lower rate too.
    assert downstream.DEFAULT_PROCEDURES == ("tune", "probe-then-tune")
    chosen = [downstream.PROCEDURES[name] for name in downstream.DEFAULT_PROCEDURES]
    assert {settings["head_only_epochs"] for settings in chosen} == {0, settings.head_only_epochs}
    assert {settings["learning_rate"] for settings in chosen} == {settings.learning_rate}
    assert set(downstream.AG_NEWS_PROCEDURES) == {*downstream.DEFAULT_PROCEDURES, "tune-3e-4"}
    assert downstream.default_procedure() in downstream.AG_NEWS_PROCEDURES


def test_the_reproduce_line_names_only_the_procedure_sets_that_are_not_the_default():
    from argparse import Namespace

    import downstream

    defaults = Namespace(
        procedures=list(downstream.AG_NEWS_PROCEDURES),
        ner_procedures=list(downstream.DEFAULT_PROCEDURES),
    )
    assert bench_quality.procedure_flags(defaults) == ""
    changed = Namespace(procedures=defaults.procedures, ner_procedures=["tune-3e-4"])
    assert bench_quality.procedure_flags(changed) == " --ner-procedures tune-3e-4"
    changed = Namespace(procedures=["tune"], ner_procedures=["tune", "tune-3e-4"])
    assert bench_quality.procedure_flags(changed) == (
        " --procedures tune --ner-procedures tune tune-3e-4"
    )


def test_the_peer_trains_for_mlms_seconds_up_to_the_chosen_checkpoint():
    run = {"metrics": {"token_embedding_init_seconds": 7.5}}
    points = [{"seconds": 100.0}, {"seconds": 210.0}, {"seconds": 330.0}]
    assert bench_quality.peer_budget(run, points, 2) == 217.5  # count-based start included
    assert bench_quality.peer_budget(run, points, 3) == 337.5  # the last: mlm's whole run
    assert bench_quality.peer_budget({"metrics": {}}, points, 1) == 100.0
    with pytest.raises(ValueError, match="--peer-point 4: give 1 to 3"):
        bench_quality.peer_budget(run, points, 4)


def test_a_peer_point_beyond_the_curve_is_refused_with_the_flag_named(
    tmp_path, monkeypatch, capsys
):
    argv = ["bench_quality.py", "--curve-points", "3", "--peer-point", "4"]
    monkeypatch.setattr(sys, "argv", [*argv, "--output", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        bench_quality.main()
    assert exit_info.value.code == 2
    assert "--peer-point 4: give 1 to --curve-points 3" in capsys.readouterr().err


def test_fine_tuning_seeds_are_averaged_and_kept():
    runs = [
        {
            "pretrained": {"accuracy": 0.80, "validation_accuracy": 0.70, "epochs_trained": 5},
            "baseline": {"accuracy": 0.79, "validation_accuracy": 0.60},
        },
        {
            "pretrained": {"accuracy": 0.78, "validation_accuracy": 0.74, "epochs_trained": 6},
            "baseline": {"accuracy": 0.75, "validation_accuracy": 0.62},
        },
    ]
    sides = bench_quality.mean_over_seeds(runs)
    assert abs(sides["pretrained"]["validation_accuracy"] - 0.72) < 1e-9
    assert abs(sides["pretrained"]["accuracy"] - 0.79) < 1e-9
    assert abs(sides["baseline"]["accuracy"] - 0.77) < 1e-9
    assert sides["pretrained"]["per_seed"] == [0.80, 0.78]
    assert sides["pretrained"]["epochs_trained"] == [5, 6]
    assert bench_quality.seed_cell(sides["baseline"]) == "0.770 (0.790, 0.750)"
    assert bench_quality.seed_cell({"accuracy": 0.8, "per_seed": [0.8]}) == "0.800"


def test_zero_seeds_is_refused_with_the_flag_named(tmp_path, monkeypatch, capsys):
    argv = ["bench_quality.py", "--seeds", "0", "--output", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        bench_quality.main()
    assert exit_info.value.code == 2
    assert "--seeds 0: give at least 1 fine-tuning seed" in capsys.readouterr().err


def test_tokens_per_step_leave_out_padding_like_the_training_loop():
    # Line-by-line shards: 3 steps of 4 x 64 slots, of which the loop counted 600 real tokens.
    run = {"metrics": {"tokens": 600.0, "steps": 3, "seq_length": 64}}
    assert bench_quality.real_tokens_per_step(run) == 200.0


def test_default_run_shards_one_line_per_example_and_counts_real_tokens(tmp_path, monkeypatch):
    # Short news-like lines: one per padded 64-token example, so fewer real tokens than slots.
    # The Hugging Face peer runs too (for mlm's few seconds) and counts its own batches' tokens.
    data = tmp_path / "data"
    (data / "agnews").mkdir(parents=True)
    (data / "sotu").mkdir()
    words = ["markets", "rally", "team", "wins", "rocket", "launch", "talks", "resume"]
    lines = [" ".join(words[(i + j) % 8] for j in range(6 + i % 5)) for i in range(80)]
    for split in ("train", "test"):
        (data / "agnews" / f"{split}.tsv").write_text(
            "text\tlabel\n"
            + "".join(f"{line}\t{('World', 'Sports')[i % 2]}\n" for i, line in enumerate(lines))
        )
    (data / "sotu" / "a.txt").write_text("\n".join(lines[:20]) + "\n")
    argv = ["bench_quality.py", "--data", str(data), "--output", str(tmp_path / "out")]
    argv += ["--workdir", str(tmp_path / "work"), "--steps", "4", "--batch-size", "4"]
    argv += ["--vocab-size", "120", "--curve-points", "2", "--validation-batches", "1"]
    argv += ["--no-finetune"]
    monkeypatch.setattr(sys, "argv", argv)
    assert bench_quality.main() == 0
    manifest = json.loads((tmp_path / "work" / "shards" / "manifest.json").read_text())
    assert manifest["line_by_line"] is True and manifest["seq_length"] == 64
    facts = json.loads((tmp_path / "out" / "quality.json").read_text())
    last = facts["curves"]["mlm"][-1]
    assert last["step"] == 4
    assert 0 < last["tokens"] < 4 * 4 * 64  # padding left out
    assert last["tokens"] == round(facts["mlm"]["metrics"]["tokens"])
    assert "one line per example" in (tmp_path / "out" / "quality.md").read_text()

    from mlm.data import pretraining_dataset

    peer = facts["curves"]["hf-run_mlm"][-1]
    batches = pretraining_dataset(str(tmp_path / "work" / "shards"), 4, split="train", seed=0)
    masks = [b["attention_mask"] for b in batches.take(peer["step"]).as_numpy_iterator()]
    assert peer["tokens"] == sum(int(mask.sum()) for mask in masks) < peer["step"] * 4 * 64

    # Fine-tuning the same encoder again (--reuse): every seed in its own worker process.
    argv = ["bench_quality.py", "--data", str(data), "--output", str(tmp_path / "again")]
    argv += ["--workdir", str(tmp_path / "work"), "--reuse", "--no-peer", "--no-probe"]
    argv += ["--shots", "3", "--seeds", "2", "--dev-per-class", "2", "--test-rows", "8"]
    argv += ["--finetune", '{"epochs": 1, "pooling": "mean"}', "--finetune-processes", "2"]
    monkeypatch.setattr(sys, "argv", argv)
    assert bench_quality.main() == 0
    custom = json.loads((tmp_path / "again" / "quality.json").read_text())["finetune"]["3"]
    assert custom["custom"]["settings"] == {"epochs": 1, "pooling": "mean"}
    for side in ("pretrained", "baseline"):
        assert len(custom["custom"][side]["per_seed"]) == 2
        assert all(0 <= accuracy <= 1 for accuracy in custom["custom"][side]["per_seed"])
    assert custom["custom"]["seconds"] > 0
    for seed in (0, 1):
        assert (tmp_path / "work" / f"finetune-3-custom-seed{seed}" / "metrics.json").is_file()


def test_finetune_processes_below_one_is_refused(tmp_path, monkeypatch, capsys):
    argv = ["bench_quality.py", "--finetune-processes", "0", "--output", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        bench_quality.main()
    assert exit_info.value.code == 2
    assert "--finetune-processes 0: give at least 1" in capsys.readouterr().err


def test_conll_sentences_leave_out_docstart_and_the_best_is_chosen_on_dev_entity_f1(tmp_path):
    conll = tmp_path / "train.txt"
    conll.write_text(
        "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n"
        "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n\n"
    )
    blocks = bench_ner.read_sentences(conll)
    assert blocks == ["EU NNP B-NP B-ORG\nrejects VBZ B-VP O", "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER"]  # fmt: skip

    def side(dev, test):
        return {"validation_entity_f1": dev, "entity_f1": test}

    best = bench_ner.best_against_best(
        {
            "tune": {"pretrained": side(0.50, 0.40), "baseline": side(0.30, 0.35)},
            "probe-then-tune": {"pretrained": side(0.45, 0.60), "baseline": side(0.31, 0.20)},
        },
        "entity_f1",
    )
    # Chosen on dev: pretrained "tune" (test 0.40), baseline "probe-then-tune" (test 0.20).
    assert best["pretrained"]["procedure"] == "tune" and best["pretrained"]["entity_f1"] == 0.40
    assert best["baseline"]["procedure"] == "probe-then-tune"
    assert best["gain_points"] == pytest.approx(20.0)
