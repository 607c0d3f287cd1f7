"""`mlm pipeline submit|schedule|compile`.

No KFP API server can run here, so submit/schedule talk to `FakeKFPClient`, a stand-in that records
the calls `kfp.Client` would receive; the package they send is the really compiled pipeline.
"""

import types

import pytest
import yaml

from mlm import kfp_client
from mlm.cli import main
from mlm.errors import UserInputError


class FakeKFPClient:
    """Records calls with the signatures of the kfp.Client methods the module uses."""

    def __init__(self, host=None, token=None, namespace=None):
        self.host, self.token, self.namespace = host, token, namespace
        self.calls = []

    def create_run_from_pipeline_package(self, pipeline_file, **kwargs):
        self.calls.append(("run", pipeline_file, kwargs))
        return types.SimpleNamespace(run_id="run-123")

    def create_experiment(self, name, description=None, namespace=None):
        self.calls.append(("experiment", name, {"namespace": namespace}))
        return types.SimpleNamespace(experiment_id=f"exp-{name}")

    def create_recurring_run(self, **kwargs):
        self.calls.append(("recurring", kwargs["job_name"], kwargs))
        return types.SimpleNamespace(recurring_run_id="rr-1")


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    from pipelines.compile import compile_pipeline

    return compile_pipeline(str(tmp_path_factory.mktemp("pkg") / "pipeline.yaml"))


@pytest.fixture
def fake(monkeypatch):
    clients = []

    def factory(host, token, namespace):
        clients.append(FakeKFPClient(host, token, namespace))
        return clients[-1]

    monkeypatch.setattr(kfp_client, "make_client", factory)
    return clients


@pytest.mark.parametrize(
    "cron", ["0 0 3 * * 0", "0 */15 * * * *", "0 30 9 ? * MON-FRI", "5 0 0 1,15 JAN-JUN *"]
)
def test_valid_crons(cron):
    assert kfp_client.validate_cron(f"  {cron} ") == cron


@pytest.mark.parametrize("cron", ["@daily", "@every 6h", "@every 1h30m"])
def test_descriptors(cron):
    assert kfp_client.validate_cron(cron) == cron


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("0 3 * * 0", "try '0 0 3 \\* \\* 0'"),
        ("0 0 3 * *", "6 fields"),
        ("0 60 3 * * 0", "minute field '60'"),
        ("0 0 24 * * 0", "hour field"),
        ("0 0 3 0 * *", "day of month field '0'"),
        ("0 0 3 * 13 *", "month field"),
        ("0 0 3 * * 7", "day of week field"),
        ("0 0 5-3 * * *", "runs backwards"),
        ("0 */0 * * * *", "step"),
        ("0 0 3 ? * x", "day of week field 'x'"),
        ("0 0 3 * ? *", "month field"),
        ("@every soon", "descriptor"),
        ("", "expected 6 fields"),
    ],
)
def test_invalid_crons_name_the_field(cron, message):
    with pytest.raises(UserInputError, match=message):
        kfp_client.validate_cron(cron)


def test_parse_params_decodes_json_values():
    params = kfp_client.parse_params(
        ["steps=2000", "lowercase=false", "corpus_uri=gs://b/c.txt", 'model_overrides={"a": 1}']
    )
    assert params == {
        "steps": 2000,
        "lowercase": False,
        "corpus_uri": "gs://b/c.txt",
        "model_overrides": {"a": 1},
    }
    with pytest.raises(UserInputError, match="KEY=VALUE"):
        kfp_client.parse_params(["steps"])


def test_submit_creates_a_run_from_the_package(fake, package, capsys):
    code = main(
        [
            "pipeline",
            "submit",
            "--host",
            "https://kfp.example.com/pipeline",
            "--token",
            "secret",
            "--package",
            package,
            "--experiment",
            "nightly",
            "--param",
            "steps=50",
            "--run-name",
            "try-1",
            "--no-cache",
        ]
    )
    assert code == 0
    (client,) = fake
    assert (client.host, client.token) == ("https://kfp.example.com/pipeline", "secret")
    ((kind, path, kwargs),) = client.calls
    assert (kind, path) == ("run", package)
    assert kwargs["arguments"] == {"steps": 50}
    assert kwargs["experiment_name"] == "nightly"
    assert kwargs["run_name"] == "try-1"
    assert kwargs["enable_caching"] is False
    assert "run-123" in capsys.readouterr().out


def test_schedule_creates_a_recurring_run(fake, package, monkeypatch):
    monkeypatch.delenv("KFP_TOKEN", raising=False)
    code = main(
        [
            "pipeline",
            "schedule",
            "--package",
            package,
            "--cron",
            "0 0 3 * * 0",
            "--param",
            "steps=9",
        ]
    )
    assert code == 0
    (client,) = fake
    assert client.host is None  # in-cluster endpoint
    experiment, recurring = client.calls
    assert experiment[:2] == ("experiment", kfp_client.DEFAULT_EXPERIMENT)
    kwargs = recurring[2]
    assert kwargs["experiment_id"] == f"exp-{kfp_client.DEFAULT_EXPERIMENT}"
    assert kwargs["cron_expression"] == "0 0 3 * * 0"
    assert kwargs["max_concurrency"] == 1
    assert kwargs["no_catchup"] is True
    assert kwargs["params"] == {"steps": 9}
    assert kwargs["pipeline_package_path"] == package
    assert kwargs["enable_caching"] is None


def test_bad_cron_fails_before_contacting_the_server(fake, package, capsys):
    code = main(["pipeline", "schedule", "--package", package, "--cron", "0 3 * * 0"])
    assert code == 2
    assert fake == []
    assert "6 fields" in capsys.readouterr().err


def test_missing_package_is_a_user_error(fake, tmp_path, capsys):
    code = main(["pipeline", "submit", "--package", str(tmp_path / "none.yaml")])
    assert code == 2
    assert fake == []
    assert "make compile" in capsys.readouterr().err


def test_make_client_passes_host_and_token(monkeypatch):
    import kfp

    seen = {}

    class RecordingClient:
        def __init__(self, **kwargs):
            seen.update(kwargs)

    monkeypatch.setattr(kfp, "Client", RecordingClient)
    kfp_client.make_client("http://h:8888", "t", "team-a")
    assert seen == {"host": "http://h:8888", "existing_token": "t", "namespace": "team-a"}
    seen.clear()
    kfp_client.make_client(None)
    assert seen == {"host": None, "existing_token": None}


def test_compile_subcommand_writes_loadable_yaml(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(kfp_client.__file__.rsplit("/src/", 1)[0])
    output = tmp_path / "out.yaml"
    assert main(["pipeline", "compile", "--output", str(output)]) == 0
    spec = yaml.safe_load_all(output.read_text())
    assert next(spec)["pipelineInfo"]["name"] == "mlm-pretraining"
    assert str(output) in capsys.readouterr().out
