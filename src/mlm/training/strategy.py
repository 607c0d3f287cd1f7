"""Picks the tf.distribute strategy for this process: multi-worker, multi-GPU or default."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlm.training.cluster import ClusterInfo

if TYPE_CHECKING:
    import tensorflow as tf


def make_strategy(cluster: ClusterInfo) -> tf.distribute.Strategy:
    """Returns the distribution strategy that fits this process and its machine.

    MultiWorkerMirroredStrategy when the cluster has several workers, MirroredStrategy over all
    local GPUs when there are more than one, else TensorFlow's default (no-op) strategy. Create it
    before any other TensorFlow work: MultiWorkerMirroredStrategy must configure the runtime first.

    Args:
        cluster: this process's identity, from `resolve_cluster()`.

    Returns:
        The strategy; models, optimizers and checkpoints must be created in its `scope()`.
    """
    import tensorflow as tf

    if cluster.is_distributed:
        config = cluster.tf_config or {}
        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(config["cluster"]),
            task_type=cluster.task_type,
            task_id=cluster.task_index,
            rpc_layer=config.get("rpc_layer", "grpc"),
        )
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy([gpu.name for gpu in gpus])
    return tf.distribute.get_strategy()
