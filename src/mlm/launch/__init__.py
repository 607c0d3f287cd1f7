"""Launchers: where a pretrain run's workers run. `pretrain(config)` is the one way in.

`mlm pretrain` and the pipeline's pretrain component both call `pretrain` with a
`PretrainLaunchConfig`; its `job.launcher` picks the launcher: `mlm.launch.local` (this process,
or `workers` local processes wired by TF_CONFIG) or `mlm.launch.kubernetes` (a TrainJob or TFJob
of `workers` pods). A config object travels inside a process; argv exists only where a worker
process or pod starts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlm.config import PretrainLaunchConfig


def pretrain(config: PretrainLaunchConfig, *, env_vars: Sequence[Mapping[str, Any]] = ()) -> Any:
    """Runs `config` with its launcher and waits until it ends.

    Args:
        config: the run and where it runs (`config.job`).
        env_vars: with a cluster launcher, further container env entries of the workers (the
            pipeline step passes its task's env); the local workers inherit this process's.

    Returns:
        The local run's `PretrainResult`, or the cluster job's `JobResult`.
    """
    if config.job.launcher == "local":
        from mlm.launch.local import run_pretraining

        return run_pretraining(config)
    # Only needed (and only importable with the Kubernetes client) for cluster launchers.
    from mlm.launch.kubernetes import launch_pretraining

    return launch_pretraining(config, env_vars=env_vars)
