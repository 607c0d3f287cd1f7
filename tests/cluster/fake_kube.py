"""An in-memory stand-in for the Kubernetes API server, plugged in at the client's HTTP boundary.

No Kubernetes API server can run on the test machines, so `FakeKubernetes` subclasses the official
`kubernetes.client.ApiClient` and answers its `request()` calls from dicts. Everything above that
boundary is the real client: `CustomObjectsApi` / `CoreV1Api` build the URLs and query strings,
serialise bodies, raise `ApiException` for error statuses and deserialise `V1PodList`.

What it accepts is upstream's, not ours: a custom object is checked as the API server of the
emulated release would check it, from upstream's published API packages and rules
(tests/conformance: `trainer_api` for Kubeflow Trainer 2.1.0 / 2.3.0, `tfjob_api` for the
Training Operator 1.9.2). An unknown field is pruned (kept out of the stored object) unless the
client sends `fieldValidation=Strict`, which fails the create with HTTP 400; a type error is HTTP
422; the admission webhook's refusal is HTTP 403; a kind whose CRD is not installed is HTTP 404.
An `authorize` hook (tests/conformance/rbac.py over upstream's roles) refuses requests with 403
as RBAC does.

It serves the calls the launcher makes: custom objects (create, get, list by label, delete), API
discovery of a group version, pod list by label, pod log (with kubelet-style timestamps when
asked), ServiceAccount get and event list. `serve` puts the same fake behind a loopback HTTP server, for a launcher in another process.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlparse

import yaml
from kubernetes.client import ApiClient, Configuration
from kubernetes.client.exceptions import ApiException

from tests.conformance import tfjob_api, trainer_api

REPO = Path(__file__).resolve().parents[2]
_CUSTOM = re.compile(
    r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)/namespaces/(?P<ns>[^/]+)/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?$"
)
_PODS = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods$")
_LOG = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<name>[^/]+)/log$")
_SERVICE_ACCOUNT = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/serviceaccounts/(?P<name>[^/]+)$")
_EVENTS = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/events$")
_DISCOVERY = re.compile(r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)$")


def shipped_runtime() -> dict:
    """This project's ClusterTrainingRuntime as manifests/base ships it."""
    path = REPO / "manifests/base/runtime/tensorflow-distributed.yaml"
    return yaml.safe_load(path.read_text())


@dataclass(frozen=True)
class CustomResourceAPI:
    """One installed custom resource kind as the emulated release checks it.

    Attributes:
        kind: its kind.
        check: the CRD schema's verdict (`tests.conformance.schema.Result`).
        cel: errors of the CRD's validation rules (HTTP 422).
        admit: the validating webhook's errors (HTTP 403), given the cluster's state.
        webhook: the webhook's name, as the API server quotes it.
    """

    kind: str
    check: Callable[[dict], Any]
    cel: Callable[[dict], list[str]]
    admit: Callable[[dict, FakeKubernetes], list[str]]
    webhook: str


def trainer_api_of(version: str) -> CustomResourceAPI:
    """The TrainJob API of Kubeflow Trainer `version` (2.1.0 or 2.3.0)."""
    return CustomResourceAPI(
        kind="TrainJob",
        check=lambda obj: trainer_api.check(obj, version),
        cel=trainer_api.cel_errors,
        admit=lambda obj, kube: trainer_api.admission_errors(obj, kube.runtimes, version),
        webhook=trainer_api.WEBHOOK,
    )


def tfjob_api_of() -> CustomResourceAPI:
    """The TFJob API of the Training Operator 1.9.2."""
    return CustomResourceAPI(
        kind="TFJob",
        check=tfjob_api.check,
        cel=lambda obj: [],
        admit=lambda obj, kube: tfjob_api.admission_errors(obj),
        webhook=tfjob_api.WEBHOOK,
    )


def _status_error(status: int, reason: str, message: str) -> ApiException:
    error = ApiException(status=status, reason=reason)
    error.body = json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": status,
        }
    )
    return error


def _aggregate(errors: list[str]) -> str:
    """k8s.io/apimachinery's `ErrorList.ToAggregate().Error()`: one error as is, several in []."""
    return errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"


class _Response:
    """What `ApiClient.request` returns: status, reason, the body decoded to text, headers."""

    def __init__(self, status: int, data: Any):
        self.status = status
        self.reason = "OK"
        self.data = data if isinstance(data, str) else json.dumps(data)

    def getheaders(self) -> dict[str, str]:
        return {"content-type": "application/json"}

    def getheader(self, name: str, default: str | None = None) -> str | None:
        return self.getheaders().get(name.lower(), default)


class FakeKubernetes(ApiClient):
    """A Kubernetes API server in a dict (see the module docstring).

    Args:
        trainer: the emulated Kubeflow Trainer release ("2.1.0", "2.3.0"), or None when its CRDs
            are not installed.
        training_operator: whether the Training Operator's TFJob CRD (v1.9.2) is installed.

    Attributes:
        apis: the installed custom resource kinds by (group, version, plural).
        runtimes: the cluster's ClusterTrainingRuntimes by name (this project's, by default).
        service_accounts: the ServiceAccounts as (namespace, name); None: every namespace has
            every ServiceAccount asked for.
        objects: custom objects by (plural, namespace, name).
        pods: pod dicts by namespace, each with metadata.labels used by label selectors.
        logs: log text by (namespace, pod, container, previous).
        events: event dicts by namespace.
        calls: every request as (method, path, query dict), for assertions.
        on_get: called with the stored object on every custom-object GET (tests advance the
            job's status there, like a controller would).
        on_create: called with every stored custom object (a controller's reaction).
        authorize: called with (method, path, query); a returned message refuses the request
            with HTTP 403, as RBAC does.
        create_error: (status, message) that every custom-object create answers with, or None.
        timeouts: the `_request_timeout` of every request.
    """

    def __init__(self, trainer: str | None = "2.3.0", training_operator: bool = True) -> None:
        super().__init__(Configuration(host="http://fake-kubernetes"))
        self.apis: dict[tuple[str, str, str], CustomResourceAPI] = {}
        if trainer:
            key = (trainer_api.GROUP, trainer_api.API_VERSION, "trainjobs")
            self.apis[key] = trainer_api_of(trainer)
        if training_operator:
            self.apis[(tfjob_api.GROUP, tfjob_api.API_VERSION, "tfjobs")] = tfjob_api_of()
        self.runtimes: dict[str, dict] = {"mlm-tensorflow-distributed": shipped_runtime()}
        self.service_accounts: set[tuple[str, str]] | None = None
        self.objects: dict[tuple[str, str, str], dict] = {}
        self.pods: dict[str, list[dict]] = {}
        self.logs: dict[tuple[str, str, str, bool], str] = {}
        self.events: dict[str, list[dict]] = {}
        self.calls: list[tuple[str, str, dict[str, str]]] = []
        self.on_get: Callable[[dict], None] | None = None
        self.on_create: Callable[[dict], None] | None = None
        self.authorize: Callable[[str, str, dict[str, str]], str | None] | None = None
        self.create_error: tuple[int, str] | None = None
        self.timeouts: list[Any] = []

    def has_service_account(self, namespace: str, name: str) -> bool:
        return self.service_accounts is None or (namespace, name) in self.service_accounts

    def request(
        self,
        method,
        url,
        query_params=None,
        headers=None,
        post_params=None,
        body=None,
        _preload_content=True,
        _request_timeout=None,
    ):
        path = urlparse(url).path
        query = {key: str(value) for key, value in query_params or []}
        self.calls.append((method, path, query))
        self.timeouts.append(_request_timeout)
        if self.authorize is not None and (refusal := self.authorize(method, path, query)):
            raise _status_error(403, "Forbidden", refusal)
        if match := _CUSTOM.match(path):
            return self._custom(method, match, body, query)
        if (match := _DISCOVERY.match(path)) and method == "GET":
            resources = [
                {"name": plural, "namespaced": True, "kind": api.kind}
                for (group, version, plural), api in self.apis.items()
                if (group, version) == (match["group"], match["version"])
            ]
            if not resources:
                raise _status_error(
                    404, "NotFound", "the server could not find the requested resource"
                )
            group_version = f"{match['group']}/{match['version']}"
            return _Response(
                200,
                {"kind": "APIResourceList", "groupVersion": group_version, "resources": resources},
            )
        if (match := _PODS.match(path)) and method == "GET":
            return self._list_pods(match["ns"], query.get("labelSelector", ""))
        if (match := _SERVICE_ACCOUNT.match(path)) and method == "GET":
            if not self.has_service_account(match["ns"], match["name"]):
                raise _status_error(404, "NotFound", f'serviceaccounts "{match["name"]}" not found')
            return _Response(
                200,
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": dict(match.groupdict())},
            )
        if (match := _EVENTS.match(path)) and method == "GET":
            items = self.events.get(match["ns"], [])
            return _Response(200, {"apiVersion": "v1", "kind": "EventList", "items": items})
        if (match := _LOG.match(path)) and method == "GET":
            key = (
                match["ns"],
                match["name"],
                query.get("container", ""),
                query.get("previous") == "True",
            )
            if key not in self.logs:
                raise ApiException(status=404, reason="Not Found")
            lines = self.logs[key].splitlines()
            if query.get("timestamps") == "True":
                # The kubelet's RFC 3339 timestamps; here line i was written at second i.
                lines = [
                    f"2026-11-28T03:{i // 60:02d}:{i % 60:02d}.{i:06d}Z {line}"
                    for i, line in enumerate(lines)
                ]
            tail = int(query.get("tailLines", len(lines)))
            return _Response(200, "\n".join(lines[-tail:]))
        raise ApiException(status=404, reason=f"no fake route for {method} {path}")

    def _create(self, match: re.Match, body: dict, query: dict[str, str]) -> _Response:
        """A custom-object create as the emulated API server decides it."""
        api = self.apis.get((match["group"], match["version"], match["plural"]))
        if api is None:
            raise _status_error(404, "NotFound", "the server could not find the requested resource")
        verdict = api.check(body)
        name = body["metadata"]["name"]
        invalid = verdict.invalid + api.cel(body)
        if invalid:
            raise _status_error(
                422,
                "Invalid",
                f'{api.kind}.{match["group"]} "{name}" is invalid: {", ".join(invalid)}',
            )
        if verdict.unknown and query.get("fieldValidation") == "Strict":
            raise _status_error(
                400,
                "BadRequest",
                f'{api.kind} in version "{match["version"]}" cannot be handled as a '
                f"{api.kind}: {verdict.strict_error()}",
            )
        stored = verdict.pruned
        refused = api.admit(stored, self)
        if refused:
            raise _status_error(
                403,
                "Forbidden",
                f'admission webhook "{api.webhook}" denied the request: {_aggregate(refused)}',
            )
        key = (match["plural"], match["ns"], name)
        if key in self.objects:
            raise ApiException(status=409, reason="AlreadyExists")
        self.objects[key] = copy.deepcopy(stored)
        if self.on_create is not None:
            self.on_create(self.objects[key])
        return _Response(201, stored)

    def _custom(self, method: str, match: re.Match, body: Any, query: dict[str, str]) -> _Response:
        if method == "POST" and self.create_error is not None:
            status, message = self.create_error
            error = ApiException(status=status, reason="Refused")
            error.body = json.dumps({"kind": "Status", "status": "Failure", "message": message})
            raise error
        if method == "GET" and match["name"] is None:
            return self._list_custom(match["plural"], match["ns"])
        if method == "POST":
            return self._create(match, body, query)
        key = (match["plural"], match["ns"], match["name"])
        if key not in self.objects:
            raise ApiException(status=404, reason="Not Found")
        if method == "GET":
            if self.on_get is not None:
                self.on_get(self.objects[key])
            return _Response(200, self.objects[key])
        if method == "DELETE":
            del self.objects[key]
            self.pods.pop(match["ns"], None)  # owner references: the pods go with the job
            return _Response(200, {"kind": "Status", "status": "Success"})
        raise ApiException(status=405, reason="Method Not Allowed")

    def _list_custom(self, plural: str, namespace: str) -> _Response:
        selector = self.calls[-1][2].get("labelSelector", "")
        items = [
            obj
            for (kind, ns, _), obj in self.objects.items()
            if kind == plural and ns == namespace and _selected(obj, selector)
        ]
        return _Response(200, {"items": items})

    def _list_pods(self, namespace: str, selector: str) -> _Response:
        items = [pod for pod in self.pods.get(namespace, []) if _selected(pod, selector)]
        return _Response(
            200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}
        )


def _selected(obj: dict, selector: str) -> bool:
    """Whether `obj` matches an equality label selector ("a=b,c=d")."""
    wanted = dict(term.split("=", 1) for term in selector.split(",") if term)
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(labels.get(key) == value for key, value in wanted.items())


def pending_pod(name: str, labels: dict[str, str], *, waiting: str = "", unschedulable: str = ""):
    """A pod that cannot start: its container waits with reason `waiting` (e.g.
    ImagePullBackOff), or the scheduler reports it Unschedulable with message `unschedulable`."""
    status: dict[str, Any] = {"phase": "Pending"}
    if waiting:
        status["containerStatuses"] = [
            {
                "name": "node",
                "image": "registry.example.com/mlm:nope",
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {"waiting": {"reason": waiting, "message": "manifest unknown"}},
            }
        ]
    if unschedulable:
        status["conditions"] = [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": unschedulable,
            }
        ]
    return {"metadata": {"name": name, "labels": labels}, "status": status}


def running_pod(name: str, labels: dict[str, str]) -> dict:
    """A pod whose containers run."""
    return {"metadata": {"name": name, "labels": labels}, "status": {"phase": "Running"}}


def failed_pod(
    name: str,
    labels: dict[str, str],
    container: str,
    exit_code: int,
    reason: str,
    finished_at: str,
    message: str | None = None,
) -> dict:
    """A pod whose container terminated with `exit_code` (as the kubelet reports it)."""
    terminated = {"exitCode": exit_code, "reason": reason, "finishedAt": finished_at}
    if message:
        terminated["message"] = message
    return {
        "metadata": {"name": name, "labels": labels},
        "status": {
            "phase": "Failed",
            "containerStatuses": [
                {
                    "name": container,
                    "image": "img",
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"terminated": terminated},
                }
            ],
        },
    }


@contextlib.contextmanager
def serve(fake: FakeKubernetes) -> Iterator[str]:
    """Serves `fake` over HTTP on loopback (for a launcher in another process); yields its URL.

    Each request goes through `fake.request`, so the same routes, hooks and recorded calls apply;
    an ApiException becomes its HTTP status with the Status body.
    """
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            parsed = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            try:
                with lock:
                    response = fake.request(
                        self.command,
                        fake.configuration.host + parsed.path,
                        query_params=parse_qsl(parsed.query, keep_blank_values=True),
                        body=body,
                    )
                status, data = response.status, response.data
            except ApiException as error:
                status = error.status
                data = error.body or json.dumps({"kind": "Status", "message": error.reason})
            payload = data.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
