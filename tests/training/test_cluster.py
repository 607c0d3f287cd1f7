"""Worker identity from each source: TF_CONFIG, Kubeflow Trainer v2 JobSet variables, neither."""

from __future__ import annotations

import json

import pytest

from mlm.errors import UserInputError
from mlm.training.cluster import ClusterInfo, resolve_cluster


def tf_config(cluster: dict, task_type: str, index: int) -> dict[str, str]:
    return {
        "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})
    }


def test_no_identity_is_a_single_chief_process():
    info = resolve_cluster({})
    assert info == ClusterInfo(source="single")
    assert info.is_chief and not info.is_distributed and info.num_workers == 1
    assert info.tf_config is None


def test_tf_config_workers_worker_zero_is_chief():
    hosts = ["w0:2222", "w1:2222", "w2:2222"]
    infos = [resolve_cluster(tf_config({"worker": hosts}, "worker", i)) for i in range(3)]
    assert [info.source for info in infos] == ["tf_config"] * 3
    assert [info.is_chief for info in infos] == [True, False, False]
    assert [info.worker_id for info in infos] == [0, 1, 2]
    assert all(info.num_workers == 3 and info.is_distributed for info in infos)
    assert infos[1].tf_config["task"] == {"type": "worker", "index": 1}


def test_tf_config_with_explicit_chief():
    cluster = {"chief": ["c:2222"], "worker": ["w0:2222", "w1:2222"]}
    chief = resolve_cluster(tf_config(cluster, "chief", 0))
    worker0 = resolve_cluster(tf_config(cluster, "worker", 0))
    assert chief.is_chief and chief.worker_id == 0 and chief.num_workers == 3
    assert not worker0.is_chief and worker0.worker_id == 1


def test_tf_config_wins_over_jobset_variables():
    env = {**tf_config({"worker": ["a:1", "b:1"]}, "worker", 1), "MLM_NUM_WORKERS": "4"}
    env["JOB_COMPLETION_INDEX"] = "3"
    info = resolve_cluster(env)
    assert (info.source, info.task_index, info.num_workers) == ("tf_config", 1, 2)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ('{"cluster": {"worker": ["a:1"]}}', "TF_CONFIG must be"),
        (
            '{"cluster": {"ps": ["a:1"]}, "task": {"type": "ps", "index": 0}}',
            "'ps' is not supported",
        ),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 2}}', "outside"),
    ],
)
def test_bad_tf_config_is_a_user_error(raw, fragment):
    with pytest.raises(UserInputError, match=fragment):
        resolve_cluster({"TF_CONFIG": raw})


def test_jobset_identity_from_jobset_name():
    env = {"MLM_NUM_WORKERS": "3", "JOB_COMPLETION_INDEX": "2", "JOBSET_NAME": "bert"}
    info = resolve_cluster(env)
    assert info.source == "jobset"
    assert (info.task_type, info.task_index, info.num_workers) == ("worker", 2, 3)
    assert not info.is_chief
    assert info.tf_config == {
        "cluster": {
            "worker": [
                "bert-node-0-0.bert:2222",
                "bert-node-0-1.bert:2222",
                "bert-node-0-2.bert:2222",
            ]
        },
        "task": {"type": "worker", "index": 2},
    }


def test_jobset_identity_from_hostname_and_port():
    env = {
        "MLM_NUM_WORKERS": "2",
        "JOB_COMPLETION_INDEX": "0",
        "HOSTNAME": "pretrain-run-7-node-0-0",
        "MLM_WORKER_PORT": "3333",
    }
    info = resolve_cluster(env)
    assert info.is_chief
    assert info.tf_config["cluster"]["worker"] == [
        "pretrain-run-7-node-0-0.pretrain-run-7:3333",
        "pretrain-run-7-node-0-1.pretrain-run-7:3333",
    ]


def test_jobset_with_one_worker_is_single_process():
    assert resolve_cluster({"MLM_NUM_WORKERS": "1", "JOB_COMPLETION_INDEX": "0"}).source == "single"


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"MLM_NUM_WORKERS": "two"}, "MLM_NUM_WORKERS='two'"),
        ({"MLM_NUM_WORKERS": "2", "JOBSET_NAME": "x"}, "JOB_COMPLETION_INDEX is not set"),
        ({"MLM_NUM_WORKERS": "2", "JOB_COMPLETION_INDEX": "2", "JOBSET_NAME": "x"}, "not below"),
        (
            {"MLM_NUM_WORKERS": "2", "JOB_COMPLETION_INDEX": "1", "HOSTNAME": "laptop"},
            "JOBSET_NAME",
        ),
        ({"MLM_NUM_WORKERS": "0"}, "at least 1"),
    ],
)
def test_bad_jobset_identity_is_a_user_error(env, fragment):
    with pytest.raises(UserInputError, match=fragment):
        resolve_cluster(env)
