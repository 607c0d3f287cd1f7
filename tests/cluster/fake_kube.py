"""An in-memory stand-in for the Kubernetes API server, plugged in at the client's HTTP boundary.

No Kubernetes API server can run on the test machines, so `FakeKubernetes` subclasses the official
`kubernetes.client.ApiClient` and answers its `request()` calls from dicts. Everything above that
boundary is the real client: `CustomObjectsApi` / `CoreV1Api` build the URLs and query strings,
serialise bodies, raise `ApiException` for error statuses and deserialise `V1PodList`. It serves
only the calls the launcher makes: custom objects (create, get, list by label, delete), pod list
by label and pod log (with kubelet-style timestamps when asked). `serve` puts the same fake behind
a loopback HTTP server, for a launcher running in another process.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlparse

from kubernetes.client import ApiClient, Configuration
from kubernetes.client.exceptions import ApiException

_CUSTOM = re.compile(
    r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)/namespaces/(?P<ns>[^/]+)/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?$"
)
_PODS = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods$")
_LOG = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<name>[^/]+)/log$")


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

    Attributes:
        objects: custom objects by (plural, namespace, name).
        pods: pod dicts by namespace, each with metadata.labels used by label selectors.
        logs: log text by (namespace, pod, container, previous).
        calls: every request as (method, path, query dict), for assertions.
        on_get: called with the stored object on every custom-object GET (tests advance the
            job's status there, like a controller would).
        create_error: (status, message) that every custom-object create answers with (as the
            API server does for a missing CRD, RBAC or quota), or None.
        timeouts: the `_request_timeout` of every request.
    """

    def __init__(self) -> None:
        super().__init__(Configuration(host="http://fake-kubernetes"))
        self.objects: dict[tuple[str, str, str], dict] = {}
        self.pods: dict[str, list[dict]] = {}
        self.logs: dict[tuple[str, str, str, bool], str] = {}
        self.calls: list[tuple[str, str, dict[str, str]]] = []
        self.on_get: Callable[[dict], None] | None = None
        self.create_error: tuple[int, str] | None = None
        self.timeouts: list[Any] = []

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
        if match := _CUSTOM.match(path):
            return self._custom(method, match, body)
        if (match := _PODS.match(path)) and method == "GET":
            return self._list_pods(match["ns"], query.get("labelSelector", ""))
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

    def _custom(self, method: str, match: re.Match, body: Any) -> _Response:
        if method == "POST" and self.create_error is not None:
            status, message = self.create_error
            error = ApiException(status=status, reason="Refused")
            error.body = json.dumps({"kind": "Status", "status": "Failure", "message": message})
            raise error
        if method == "GET" and match["name"] is None:
            return self._list_custom(match["plural"], match["ns"])
        if method == "POST":
            key = (match["plural"], match["ns"], body["metadata"]["name"])
            if key in self.objects:
                raise ApiException(status=409, reason="AlreadyExists")
            self.objects[key] = copy.deepcopy(body)
            return _Response(201, body)
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
                        query_params=parse_qsl(parsed.query),
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
