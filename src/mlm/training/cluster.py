"""Who am I in a training job: worker identity from TF_CONFIG, a Kubeflow JobSet, or neither.

Three sources, in order:

1. `TF_CONFIG` (set by the Kubeflow Training Operator's TFJob, by `mlm.launch.local`, or by hand):
   used as is.
2. Kubeflow Trainer v2 (a TrainJob runs on a JobSet and sets no `TF_CONFIG` for TensorFlow): the
   pod's identity is `JOB_COMPLETION_INDEX` (this worker's index), `MLM_NUM_WORKERS` (the count, set
   by the TrainJob launcher) and `JOBSET_NAME` (or the pod `HOSTNAME` `<name>-node-0-<i>`); the
   peers are `<name>-node-0-<i>.<name>:<MLM_WORKER_PORT>` (headless-service DNS, port 2222 unless
   set). A `TF_CONFIG` equivalent is derived from them.
3. Otherwise: a single process.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mlm.errors import UserInputError

DEFAULT_WORKER_PORT = 2222
_JOBSET_HOSTNAME = re.compile(r"^(?P<name>.+)-node-0-(?P<index>\d+)$")


@dataclass(frozen=True)
class ClusterInfo:
    """This process's place in a (possibly single-process) training cluster.

    Attributes:
        source: where the identity came from: "tf_config", "jobset" or "single".
        task_type: "worker" or "chief" ("worker" for a single process).
        task_index: index of this task within its type.
        num_workers: number of training processes (chief included).
        tf_config: the `TF_CONFIG` dict describing the cluster, or None for a single process.
    """

    source: str
    task_type: str = "worker"
    task_index: int = 0
    num_workers: int = 1
    tf_config: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def is_chief(self) -> bool:
        """True for the process that writes checkpoints, outputs and metrics.

        That is the "chief" task when the cluster has one, else worker 0 (TF's convention).
        """
        if self.task_type == "chief":
            return True
        has_chief = bool(self.tf_config and self.tf_config["cluster"].get("chief"))
        return self.task_type == "worker" and self.task_index == 0 and not has_chief

    @property
    def is_distributed(self) -> bool:
        """True when more than one process trains together."""
        return self.num_workers > 1

    @property
    def worker_id(self) -> int:
        """A unique, stable number per process: chief 0, workers after it."""
        has_chief = bool(self.tf_config and self.tf_config["cluster"].get("chief"))
        if self.task_type == "chief":
            return 0
        return self.task_index + (1 if has_chief else 0)


def resolve_cluster(environ: Mapping[str, str] | None = None) -> ClusterInfo:
    """Resolves this process's cluster identity from its environment.

    Args:
        environ: the environment to read; `os.environ` when None.

    Returns:
        The ClusterInfo. For the JobSet source its `tf_config` is derived, so a caller can export
        it as `TF_CONFIG` for TensorFlow.

    Raises:
        UserInputError: when TF_CONFIG or the JobSet variables are malformed.
    """
    env = os.environ if environ is None else environ
    if env.get("TF_CONFIG", "").strip():
        return _from_tf_config(env["TF_CONFIG"])
    if env.get("MLM_NUM_WORKERS", "").strip():
        return _from_jobset(env)
    return ClusterInfo(source="single")


def _from_tf_config(raw: str) -> ClusterInfo:
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise UserInputError(f"TF_CONFIG is not valid JSON ({error}); unset it or fix it") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise UserInputError(
            'TF_CONFIG must be {"cluster": {"worker": [...]}, "task": {"type": ..., "index": ...}}'
        )
    task_type = task.get("type")
    task_index = task.get("index", 0)
    training_types = ("chief", "worker")
    if task_type not in training_types:
        raise UserInputError(
            f"TF_CONFIG task type {task_type!r} is not supported; use 'worker' or 'chief' "
            "(parameter servers and evaluators are not used by mlm)"
        )
    hosts = cluster.get(task_type)
    if not isinstance(task_index, int) or not isinstance(hosts, list):
        raise UserInputError(f"TF_CONFIG cluster has no {task_type!r} list for task {task!r}")
    if not 0 <= task_index < len(hosts):
        raise UserInputError(
            f"TF_CONFIG task index {task_index} is outside cluster.{task_type} ({len(hosts)} hosts)"
        )
    num_workers = sum(len(cluster.get(kind) or []) for kind in training_types)
    return ClusterInfo(
        source="tf_config",
        task_type=task_type,
        task_index=task_index,
        num_workers=num_workers,
        tf_config=config,
    )


def _positive_int(env: Mapping[str, str], name: str) -> int:
    value = env.get(name, "").strip()
    if not value.isdigit():
        raise UserInputError(f"{name}={value!r} must be a non-negative integer")
    return int(value)


def _from_jobset(env: Mapping[str, str]) -> ClusterInfo:
    num_workers = _positive_int(env, "MLM_NUM_WORKERS")
    if num_workers < 1:
        raise UserInputError("MLM_NUM_WORKERS must be at least 1")
    if num_workers == 1:
        return ClusterInfo(source="single")
    if "JOB_COMPLETION_INDEX" not in env:
        raise UserInputError(
            f"MLM_NUM_WORKERS={num_workers} but JOB_COMPLETION_INDEX is not set: run the workers "
            "as an Indexed Job (Kubeflow Trainer / JobSet) or set TF_CONFIG"
        )
    index = _positive_int(env, "JOB_COMPLETION_INDEX")
    if index >= num_workers:
        raise UserInputError(
            f"JOB_COMPLETION_INDEX={index} is not below MLM_NUM_WORKERS={num_workers}"
        )
    name = env.get("JOBSET_NAME", "").strip()
    if not name:
        match = _JOBSET_HOSTNAME.match(env.get("HOSTNAME", ""))
        if not match:
            raise UserInputError(
                "cannot tell the JobSet name: set JOBSET_NAME, or run in a pod whose HOSTNAME is "
                f"'<name>-node-0-<index>' (HOSTNAME={env.get('HOSTNAME', '')!r})"
            )
        name = match["name"]
    port = _positive_int(env, "MLM_WORKER_PORT") if "MLM_WORKER_PORT" in env else None
    port = port or DEFAULT_WORKER_PORT
    hosts = [f"{name}-node-0-{i}.{name}:{port}" for i in range(num_workers)]
    tf_config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
    return ClusterInfo(
        source="jobset",
        task_type="worker",
        task_index=index,
        num_workers=num_workers,
        tf_config=tf_config,
    )
