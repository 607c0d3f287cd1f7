"""Kubeflow pipelines of the project: `mlm_pipeline.mlm_pretraining_pipeline` and its tools
(`compile.py` = `make compile`, `run_local.py` = `make run`)."""
