"""Strategy-aware pre-training: who am I in the job, which strategy, the loop, its checkpoints.

- `cluster`: `resolve_cluster()` reads this process's identity (TF_CONFIG, a Kubeflow Trainer
  JobSet, or a single process);
- `strategy`: `make_strategy()` picks MultiWorkerMirrored, Mirrored or the default strategy;
- `loop`: `train_loop()`, one step function on every strategy (evaluation:
  `mlm.evaluation.masked_lm_metrics(..., strategy=...)`);
- `checkpoints`: `CheckpointKeeper`, periodic checkpoints with automatic resume (local or object store).
- `embedding_init`: count-based initial token embeddings (PPMI-SVD vectors of the shards), what
  `token_embedding_init="cooccurrence"` starts a new model from.

`mlm.steps.pretrain` puts them together; `mlm.launch.local` runs several workers on one machine.
"""
