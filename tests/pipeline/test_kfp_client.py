"""`mlm pipeline compile|upload|submit|schedule|schedules` and the KFP credentials.

No KFP API server can run here, so the commands talk to `FakeKFPClient`: in-memory pipelines,
versions and recurring runs behind the real `kfp.Client` method signatures (each call is bound to
the real signature first). The package they send is the really compiled pipeline, and the
credential tests build a real `kfp.Client` configuration where no server is contacted.
"""

import json
import types
from pathlib import Path

import pytest
import yaml

from mlm import kfp_auth, kfp_client
from mlm.cli import main
from mlm.errors import UserInputError


class FakeKFPClient:
    """A KFP server's state behind `kfp.Client`'s method signatures.

    Every call is bound to the real `kfp.Client` method's signature first, so a call the real
    client would reject (a misspelt or missing argument) fails here too; then it is recorded and
    answered from in-memory pipelines, versions and recurring runs shaped like KFP's v2beta1 API
    objects.
    """

    def __init__(self, connection=None):
        self.connection = connection
        self.calls = []
        self.pipelines = {}  # name -> pipeline_id
        self.versions = {}  # pipeline_id -> [(version_id, name)]
        self.recurring = {}  # id -> SimpleNamespace
        self._ids = 0

    def _record(self, method, *args, **kwargs):
        import inspect

        import kfp

        inspect.signature(getattr(kfp.Client, method)).bind(self, *args, **kwargs)
        self.calls.append((method, args, kwargs))

    def _new_id(self, prefix):
        self._ids += 1
        return f"{prefix}-{self._ids}"

    def get_pipeline_id(self, name):
        self._record("get_pipeline_id", name)
        return self.pipelines.get(name)

    def upload_pipeline(self, pipeline_package_path, pipeline_name=None, **kwargs):
        self._record(
            "upload_pipeline", pipeline_package_path, pipeline_name=pipeline_name, **kwargs
        )
        pipeline_id = self._new_id("pipeline")
        self.pipelines[pipeline_name] = pipeline_id
        # KFP creates the first version, named after the pipeline, with the pipeline.
        self.versions[pipeline_id] = [(self._new_id("version"), pipeline_name)]
        return types.SimpleNamespace(pipeline_id=pipeline_id)

    def list_pipeline_versions(self, pipeline_id, page_token="", filter=None, **kwargs):
        self._record(
            "list_pipeline_versions", pipeline_id, page_token=page_token, filter=filter, **kwargs
        )
        name = json.loads(filter)["predicates"][0]["stringValue"] if filter else None
        found = [
            types.SimpleNamespace(pipeline_version_id=vid, display_name=vname)
            for vid, vname in self.versions[pipeline_id]
            if name is None or vname == name
        ]
        return types.SimpleNamespace(pipeline_versions=found or None, next_page_token="")

    def upload_pipeline_version(self, pipeline_package_path, pipeline_version_name, **kwargs):
        self._record(
            "upload_pipeline_version", pipeline_package_path, pipeline_version_name, **kwargs
        )
        version_id = self._new_id("version")
        self.versions[kwargs["pipeline_id"]].append((version_id, pipeline_version_name))
        return types.SimpleNamespace(pipeline_version_id=version_id)

    def create_experiment(self, name, description=None, namespace=None):
        self._record("create_experiment", name, description=description, namespace=namespace)
        return types.SimpleNamespace(experiment_id=f"exp-{name}")

    def run_pipeline(self, **kwargs):
        self._record("run_pipeline", **kwargs)
        return types.SimpleNamespace(run_id="run-123")

    def create_run_from_pipeline_package(self, pipeline_file, **kwargs):
        self._record("create_run_from_pipeline_package", pipeline_file, **kwargs)
        return types.SimpleNamespace(run_id="run-123")

    def create_recurring_run(self, **kwargs):
        self._record("create_recurring_run", **kwargs)
        recurring_run_id = self._new_id("rr")
        self.recurring[recurring_run_id] = types.SimpleNamespace(
            recurring_run_id=recurring_run_id,
            display_name=kwargs["job_name"],
            status="ENABLED",
            pipeline_version_reference=types.SimpleNamespace(
                pipeline_id=kwargs["pipeline_id"], pipeline_version_id=kwargs["version_id"]
            ),
            trigger=types.SimpleNamespace(
                cron_schedule=types.SimpleNamespace(
                    cron=kwargs["cron_expression"],
                    start_time=kwargs["start_time"],
                    end_time=kwargs["end_time"],
                )
            ),
            runtime_config=types.SimpleNamespace(parameters=kwargs["params"]),
        )
        return self.recurring[recurring_run_id]

    def list_recurring_runs(self, page_token="", filter=None, **kwargs):
        self._record("list_recurring_runs", page_token=page_token, filter=filter, **kwargs)
        name = json.loads(filter)["predicates"][0]["stringValue"] if filter else None
        found = [r for r in self.recurring.values() if name is None or r.display_name == name]
        # Two pages when there are several, to exercise paging.
        if not page_token and len(found) > 1:
            return types.SimpleNamespace(recurring_runs=found[:1], next_page_token="p2")
        found = found[1:] if page_token else found
        return types.SimpleNamespace(recurring_runs=found or None, next_page_token="")

    def delete_recurring_run(self, recurring_run_id):
        self._record("delete_recurring_run", recurring_run_id)
        del self.recurring[recurring_run_id]

    def disable_recurring_run(self, recurring_run_id):
        self._record("disable_recurring_run", recurring_run_id)
        self.recurring[recurring_run_id].status = "DISABLED"

    def enable_recurring_run(self, recurring_run_id):
        self._record("enable_recurring_run", recurring_run_id)
        self.recurring[recurring_run_id].status = "ENABLED"


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    from mlm_pipelines.compile import compile_pipeline

    return compile_pipeline(str(tmp_path_factory.mktemp("pkg") / "pipeline.yaml"))


@pytest.fixture
def server():
    """One fake KFP server shared by every client the CLI creates in a test."""
    return FakeKFPClient()


@pytest.fixture
def fake(monkeypatch, server):
    """The connections the CLI opened (to `server`)."""
    connections = []

    def factory(connection):
        connections.append(connection)
        server.connection = connection
        return server

    monkeypatch.setattr(kfp_client, "make_client", factory)
    monkeypatch.setenv(kfp_client.REVISION_ENV, "abc1234")
    monkeypatch.delenv("KFP_TOKEN", raising=False)
    return connections


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


def _versions(server):
    return [name for versions in server.versions.values() for _vid, name in versions]


def test_upload_creates_the_pipeline_once_and_a_version_per_package(
    fake, server, package, tmp_path, capsys
):
    assert main(["pipeline", "upload", "--package", package]) == 0
    name = kfp_client.version_name(package, "abc1234")
    assert name.startswith(f"{__import__('mlm').__version__}-abc1234-")
    assert _versions(server) == ["mlm-pretraining", name]
    assert f"version {name}: uploaded" in capsys.readouterr().out

    # The same package again: nothing uploaded.
    assert main(["pipeline", "upload", "--package", package]) == 0
    assert _versions(server) == ["mlm-pretraining", name]
    assert "already there" in capsys.readouterr().out
    assert [c[0] for c in server.calls].count("upload_pipeline") == 1

    # Another package (a different revision): a second version of the same pipeline.
    other = tmp_path / "other.yaml"
    other.write_text(Path(package).read_text() + "\n# changed\n")
    assert main(["pipeline", "upload", "--package", str(other)]) == 0
    assert len(server.pipelines) == 1 and len(_versions(server)) == 3


def test_submit_runs_the_uploaded_version(fake, server, package, capsys):
    code = main(
        ["pipeline", "submit", "--host", "https://kfp.example.com/pipeline", "--package", package,
         "--experiment", "nightly", "--param", "steps=50", "--run-name", "try-1"]
    )  # fmt: skip
    assert code == 0
    (connection,) = fake
    assert connection.host == "https://kfp.example.com/pipeline"
    method, _args, kwargs = server.calls[-1]
    assert method == "run_pipeline"
    (pipeline_id,) = server.pipelines.values()
    version_id, version = server.versions[pipeline_id][-1]
    assert kwargs["pipeline_id"] == pipeline_id and kwargs["version_id"] == version_id
    assert kwargs["params"] == {"steps": 50}
    assert kwargs["experiment_id"] == "exp-nightly"
    assert kwargs["job_name"] == "try-1"
    assert f"run run-123 of version {version}" in capsys.readouterr().out


def test_submit_without_cache_runs_the_package_inline(fake, server, package):
    assert main(["pipeline", "submit", "--package", package, "--no-cache"]) == 0
    ((method, args, kwargs),) = server.calls
    assert (method, args) == ("create_run_from_pipeline_package", (package,))
    assert kwargs["enable_caching"] is False


def _schedule(package, *extra):
    return main(
        ["pipeline", "schedule", "--package", package, "--cron", "0 0 3 * * 0", "--name",
         "weekly", *extra]
    )  # fmt: skip


def test_schedule_twice_with_one_name_leaves_one_recurring_run_on_the_new_version(
    fake, server, package, tmp_path, capsys
):
    assert _schedule(package, "--param", "steps=9", "--start-time", "2026-12-06T03:00:00Z") == 0
    (first,) = server.recurring.values()
    kwargs = next(c[2] for c in server.calls if c[0] == "create_recurring_run")
    assert kwargs["cron_expression"] == "0 0 3 * * 0"
    assert kwargs["max_concurrency"] == 1 and kwargs["no_catchup"] is True
    assert kwargs["params"] == {"steps": 9}
    assert kwargs["start_time"] == "2026-12-06T03:00:00Z" and kwargs["end_time"] is None
    assert kwargs["version_id"] == first.pipeline_version_reference.pipeline_version_id
    assert "weekly created" in capsys.readouterr().out

    # Same package, same settings: kept as it is.
    assert _schedule(package, "--param", "steps=9", "--start-time", "2026-12-06T03:00:00Z") == 0
    assert list(server.recurring.values()) == [first]
    assert "weekly unchanged" in capsys.readouterr().out

    # A new package version: one recurring run named weekly, on the new version.
    newer = tmp_path / "newer.yaml"
    newer.write_text(Path(package).read_text() + "\n# newer\n")
    assert _schedule(str(newer), "--param", "steps=9") == 0
    (current,) = server.recurring.values()
    assert current.display_name == "weekly" and current is not first
    newest_version = server.versions[current.pipeline_version_reference.pipeline_id][-1]
    assert current.pipeline_version_reference.pipeline_version_id == newest_version[0]
    assert f"weekly updated ({current.recurring_run_id})" in capsys.readouterr().out
    # The new one was created before the old one was deleted: never without a schedule.
    methods = [c[0] for c in server.calls]
    assert methods.index("delete_recurring_run") > len(methods) - 3


def test_schedule_replaces_every_duplicate_of_the_name(fake, server, package):
    for _ in range(2):  # e.g. left over by an older version of the tool
        server.create_recurring_run(
            experiment_id="e", job_name="weekly", cron_expression="0 0 1 * * 0", start_time=None,
            end_time=None, params={}, pipeline_id="p-old", version_id="v-old",
        )  # fmt: skip
    assert _schedule(package) == 0
    assert [r.display_name for r in server.recurring.values()] == ["weekly"]


def test_schedules_list_pause_resume_delete(fake, server, package, capsys):
    assert _schedule(package) == 0
    (recurring,) = server.recurring.values()
    capsys.readouterr()
    assert main(["pipeline", "schedules", "pause", "--name", "weekly"]) == 0
    assert recurring.status == "DISABLED"
    assert main(["pipeline", "schedules", "list"]) == 0
    out = capsys.readouterr().out
    assert "weekly  DISABLED  cron '0 0 3 * * 0'" in out
    assert main(["pipeline", "schedules", "resume", "--name", "weekly"]) == 0
    assert recurring.status == "ENABLED"
    assert main(["pipeline", "schedules", "delete", "--name", "weekly"]) == 0
    assert server.recurring == {}
    assert main(["pipeline", "schedules", "delete", "--name", "weekly"]) == 2
    assert "no recurring run named 'weekly'" in capsys.readouterr().err
    assert main(["pipeline", "schedules", "pause"]) == 2


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--cron", "0 3 * * 0"], "6 fields"),
        (["--cron", "0 0 3 * * 0", "--start-time", "tomorrow"], "RFC 3339"),
        (["--cron", "0 0 3 * * 0", "--end-time", "2026-12-01T03:00:00"], "time zone"),
        (
            ["--cron", "0 0 3 * * 0", "--start-time", "2027-01-01T00:00:00Z",
             "--end-time", "2026-12-01T00:00:00Z"],
            "must be after",
        ),
    ],
)  # fmt: skip
def test_bad_schedule_fails_before_contacting_the_server(fake, package, capsys, flags, message):
    code = main(["pipeline", "schedule", "--package", package, *flags])
    assert code == 2
    assert fake == []
    assert message in capsys.readouterr().err


def test_missing_package_is_a_user_error(fake, tmp_path, capsys):
    code = main(["pipeline", "submit", "--package", str(tmp_path / "none.yaml")])
    assert code == 2
    assert fake == []
    assert "make compile" in capsys.readouterr().err


# --- credentials ------------------------------------------------------------------------------


def _secret(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text + "\n")
    return str(path)


def test_each_auth_mode_builds_the_client_arguments(tmp_path):
    from kfp.client import ServiceAccountTokenVolumeCredentials

    connection = kfp_auth.KFPConnection
    host = "https://kf.example.com/pipeline"
    assert kfp_auth.client_arguments(connection(), {}) == {"host": None}
    assert kfp_auth.client_arguments(connection(host, "team-a"), {"KFP_TOKEN": "t0"}) == {
        "host": host, "namespace": "team-a", "existing_token": "t0"}  # fmt: skip
    token_file = _secret(tmp_path, "token", "t1")
    assert kfp_auth.client_arguments(connection(host, token_file=token_file), {}) == {
        "host": host, "existing_token": "t1"}  # fmt: skip
    sa = _secret(tmp_path, "sa", "eyJ")
    arguments = kfp_auth.client_arguments(connection(host, sa_token=sa), {"KFP_TOKEN": "t0"})
    assert set(arguments) == {"host", "credentials"}  # the explicit mode wins over $KFP_TOKEN
    assert isinstance(arguments["credentials"], ServiceAccountTokenVolumeCredentials)
    assert arguments["credentials"]._token_path == sa
    assert kfp_auth.client_arguments(connection(host, iap_client_id="123.apps"), {}) == {
        "host": host, "client_id": "123.apps"}  # fmt: skip
    cookie = _secret(tmp_path, "cookie", "oauth2_proxy_kubeflow=abc")
    ca = _secret(tmp_path, "ca.pem", "-----BEGIN CERTIFICATE-----")
    assert kfp_auth.client_arguments(connection(host, cookie_file=cookie, ca_bundle=ca), {}) == {
        "host": host, "cookies": "oauth2_proxy_kubeflow=abc", "ssl_ca_cert": ca}  # fmt: skip
    assert kfp_auth.client_arguments(connection(host), {"KFP_COOKIE": "authservice_session=x"}) == {
        "host": host, "cookies": "authservice_session=x"}  # fmt: skip


def test_auth_arguments_are_accepted_by_the_real_kfp_client(tmp_path):
    """A real `kfp.Client` takes each mode's arguments (IAP needs Google credentials and a
    server, so it is checked against the signature only)."""
    import inspect

    import kfp

    host = "http://127.0.0.1:9"  # nothing listens; namespace given so no health check is made
    token = _secret(tmp_path, "token", "t1")
    ca = _secret(tmp_path, "ca.pem", "x")
    configs = [
        kfp.Client(**kfp_auth.client_arguments(connection, {}))._existing_config
        for connection in (
            kfp_auth.KFPConnection(host, "team-a", token_file=token, ca_bundle=ca),
            kfp_auth.KFPConnection(host, "team-a", sa_token=token),
            kfp_auth.KFPConnection(host, "team-a", cookie_file=_secret(tmp_path, "c", "a=b")),
        )
    ]
    assert [config.host for config in configs] == [host] * 3
    assert configs[0].ssl_ca_cert == ca
    assert configs[0].api_key["authorization"] == "t1"
    iap = kfp_auth.client_arguments(kfp_auth.KFPConnection(host, iap_client_id="x"), {})
    inspect.signature(kfp.Client).bind(**iap)


@pytest.mark.parametrize(
    ("connection", "message"),
    [
        ({"token_file": "T", "iap_client_id": "x"}, "one credential mode at a time"),
        ({"iap_client_id": "x", "host": None}, "needs --host"),
        ({"token_file": "/no/such/token"}, "--token-file /no/such/token: cannot read it"),
        ({"cookie_file": "EMPTY"}, "the file is empty"),
        ({"cookie_file": "NOEQ"}, "name=value"),
    ],
)
def test_bad_credentials_are_one_line_errors(tmp_path, connection, message):
    files = {"T": _secret(tmp_path, "t", "tok"), "EMPTY": _secret(tmp_path, "e", ""),
             "NOEQ": _secret(tmp_path, "n", "abc")}  # fmt: skip
    values = {key: files.get(value, value) for key, value in connection.items()}
    values.setdefault("host", "https://kf.example.com")
    with pytest.raises(UserInputError, match=message):
        kfp_auth.client_arguments(kfp_auth.KFPConnection(**values), {})


def test_token_is_not_a_command_line_value(capsys):
    with pytest.raises(SystemExit):
        main(["pipeline", "submit", "--token", "secret"])
    assert "unrecognized arguments: --token" in capsys.readouterr().err


class _ApiError(Exception):
    def __init__(self, status, reason=""):
        super().__init__(f"({status}) Reason: {reason}")
        self.status, self.reason = status, reason


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (_ApiError(401, "Unauthorized"), "401 to a request without credentials: give them with"),
        (_ApiError(403, "Forbidden"), "403 to a request without credentials: give them with"),
        (_ApiError(404, "Not Found"), "--host must be the pipeline API root"),
        (_ApiError(503, "Service Unavailable"), "503 Service Unavailable"),
    ],
)
def test_server_errors_become_one_line(monkeypatch, package, capsys, error, message):
    def failing_client(connection):
        client = FakeKFPClient(connection)

        def fail(*args, **kwargs):
            raise error

        client.get_pipeline_id = fail
        return client

    monkeypatch.setattr(kfp_client, "make_client", failing_client)
    code = main(["pipeline", "upload", "--host", "https://kf", "--namespace", "team-a",
                 "--package", package])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err


def test_unreachable_host_is_one_line(package, capsys, tmp_path):
    """The real kfp.Client against a closed loopback port: no traceback, the fix named."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = main(["pipeline", "upload", "--host", f"http://127.0.0.1:{port}", "--namespace",
                 "team-a", "--package", package])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cannot reach http://127.0.0.1:{port}: check --host" in err[0]


class _EchoingProxy:
    """A real HTTP server on loopback that answers every request 401 and echoes the request's
    headers in the body, as some proxies do (the KFP API server itself cannot run here)."""

    def __init__(self) -> None:
        import http.server
        import threading

        requests = self.requests = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                body = json.dumps({"error": "unauthorized", "request_headers": dict(self.headers)})
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            do_POST = do_GET

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_rejected_token_is_one_line_without_retries_and_never_logged(package, monkeypatch, capfd):
    """The real kfp.Client, no --namespace (so it asks the health endpoint first), a token in
    $KFP_TOKEN and a server answering 401 with the request headers echoed: one request, one
    line saying the token was rejected, and the token nowhere in the output, even with the kfp
    libraries logging at DEBUG."""
    import logging

    secret = "s3cr3t-token-value-0123456789"
    monkeypatch.setenv("KFP_TOKEN", secret)
    monkeypatch.setattr(logging.getLogger(), "level", logging.DEBUG)
    proxy = _EchoingProxy()
    try:
        code = main(["pipeline", "submit", "--host", proxy.url, "--package", package])
    finally:
        proxy.close()
    out, err = capfd.readouterr()
    assert code == 2
    assert len(proxy.requests) == 1, proxy.requests  # no retries on a 4xx
    assert proxy.requests[0][1].get("authorization") == f"Bearer {secret}"  # it was sent
    assert secret not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[-1].startswith("mlm pipeline: error: ")
    assert (
        "401 Unauthorized" in lines[-1] and "rejected the bearer token in $KFP_TOKEN" in lines[-1]
    )


def test_a_403_with_credentials_names_the_namespace_and_who_answered(tmp_path):
    error = _ApiError(403, "Forbidden")
    error.headers = {"server": "istio-envoy"}
    token = _secret(tmp_path, "token", "abc")
    connection = kfp_auth.KFPConnection(host="https://kf", namespace="team-a", token_file=token)
    message = kfp_auth.explain_server_error(error, connection)
    assert message.startswith("https://kf answered 403 Forbidden (answered by istio-envoy) for ")
    assert f"team-a: it accepted the bearer token in --token-file {token} but" in message


def test_the_log_filter_redacts_tokens_in_messages_and_tracebacks():
    import logging

    kfp_auth.redact_in_logs({"existing_token": "tok-123456"})
    redactor = next(
        f for f in logging.getLogger().filters if isinstance(f, kfp_auth._SecretRedactor)
    )
    try:
        raise RuntimeError("response echoed: {'Authorization': 'Bearer tok-123456'}")
    except RuntimeError:
        import sys

        record = logging.LogRecord("kfp", logging.ERROR, __file__, 1, "token %s", ("tok-123456",),
                                   sys.exc_info())  # fmt: skip
    redactor.filter(record)
    assert "tok-123456" not in record.getMessage() + record.exc_text
    assert "[redacted]" in record.exc_text


def test_compile_subcommand_writes_loadable_yaml(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(kfp_client.__file__.rsplit("/src/", 1)[0])
    output = tmp_path / "out.yaml"
    assert main(["pipeline", "compile", "--output", str(output)]) == 0
    spec = yaml.safe_load_all(output.read_text())
    assert next(spec)["pipelineInfo"]["name"] == "mlm-pretraining"
    assert str(output) in capsys.readouterr().out
