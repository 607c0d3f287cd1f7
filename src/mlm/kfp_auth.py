"""How `mlm pipeline` reaches and authenticates to a Kubeflow Pipelines API server.

One credential mode per kind of deployment (at most one at a time):

| mode | flag (or environment) | for |
| --- | --- | --- |
| bearer token | `--token-file PATH` (or `$KFP_TOKEN`) | any endpoint that takes a token |
| service-account token | `--sa-token [PATH]` | a pod, with `--host` (default path: KFP's projected token `/var/run/secrets/kubeflow/pipelines/token`) |
| IAP | `--iap-client-id ID` | Kubeflow behind Google Cloud Identity-Aware Proxy |
| session cookie | `--cookie-file PATH` (or `$KFP_COOKIE`) | Dex / oauth2-proxy (`oauth2_proxy_kubeflow=...` or `authservice_session=...`) |

Without any of them and without `--host`, `kfp.Client` uses the in-cluster endpoint and the pod's
own credentials. `--ca-bundle PATH` trusts a private certificate authority in every mode. Secrets
never travel on the command line, where `ps` shows them to every user of the machine.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import traceback
from collections.abc import Mapping
from typing import Any

from mlm.errors import UserInputError

TOKEN_ENV = "KFP_TOKEN"
COOKIE_ENV = "KFP_COOKIE"
# Where KFP projects the pipeline-runner's token in a Kubeflow pod (kfp.client's default).
SA_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"

CREDENTIAL_HINT = (
    "--token-file (or $KFP_TOKEN) for a bearer token, --iap-client-id for IAP, --cookie-file "
    "(or $KFP_COOKIE) for a Dex/oauth2-proxy session, --sa-token inside the cluster"
)


@dataclasses.dataclass(frozen=True)
class KFPConnection:
    """Where the KFP API is and which credentials to present.

    Attributes:
        host: API endpoint (e.g. https://kubeflow.example.com/pipeline); None: in-cluster.
        namespace: Kubeflow profile namespace (multi-user deployments).
        token_file: File holding a bearer token.
        sa_token: File holding a Kubernetes service-account token, re-read on every request.
        iap_client_id: OAuth client id of the IAP-protected endpoint.
        cookie_file: File holding the session cookie header value (`name=value`).
        ca_bundle: PEM file of the certificate authorities to trust.
    """

    host: str | None = None
    namespace: str | None = None
    token_file: str | None = None
    sa_token: str | None = None
    iap_client_id: str | None = None
    cookie_file: str | None = None
    ca_bundle: str | None = None

    def describe(self) -> str:
        """The endpoint, as error messages name it."""
        return self.host or "the in-cluster KFP endpoint"


class _SecretRedactor(logging.Filter):
    """Replaces credentials in log records (messages and tracebacks) with `[redacted]`."""

    BEARER = re.compile(r"(Bearer|Cookie:?|authorization'?:?)\s+['\"]?[^\s'\",}]+", re.I)

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def redact(self, text: str) -> str:
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, "[redacted]")
        return self.BEARER.sub(lambda match: f"{match.group(1)} [redacted]", text)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self.redact(record.getMessage()), ()
        if record.exc_info:
            formatted = "".join(traceback.format_exception(*record.exc_info))
            record.exc_text = self.redact(formatted).rstrip("\n")
        return True


_REDACTOR = _SecretRedactor()


def redact_in_logs(arguments: Mapping[str, Any]) -> None:
    """Keeps the credentials in `arguments` (of `kfp.Client`) out of every log line.

    The kfp client and its generated API log server responses (some echo the request headers)
    through the standard `logging` module: the filter sits on the root logger, for records
    logged there, and on its handlers and `logging.lastResort`, for records of other loggers.
    """
    for key in ("existing_token", "cookies"):
        if arguments.get(key):
            _REDACTOR.secrets.add(str(arguments[key]))
    token_path = getattr(arguments.get("credentials"), "_token_path", None)
    if token_path:
        _REDACTOR.secrets.add(_read_secret(token_path, "--sa-token"))
    root = logging.getLogger()
    for target in [root, *root.handlers, logging.lastResort]:
        if target is not None and _REDACTOR not in target.filters:
            target.addFilter(_REDACTOR)


def _read_secret(path: str, flag: str) -> str:
    try:
        with open(path, encoding="utf-8") as file:
            value = file.read().strip()
    except OSError as error:
        raise UserInputError(f"{flag} {path}: cannot read it ({error.strerror})") from None
    except UnicodeDecodeError:
        raise UserInputError(f"{flag} {path}: not a text file") from None
    if not value:
        raise UserInputError(f"{flag} {path}: the file is empty")
    return value


def client_arguments(
    connection: KFPConnection, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The keyword arguments of `kfp.Client` for a connection.

    Raises:
        UserInputError: Several credential modes at once, a mode that needs `--host` without it,
            or an unreadable/empty secret or CA file.
    """
    environ = os.environ if environ is None else environ
    token = environ.get(TOKEN_ENV) or None
    cookie = environ.get(COOKIE_ENV) or None
    modes = {
        "--token-file": connection.token_file,
        "--sa-token": connection.sa_token,
        "--iap-client-id": connection.iap_client_id,
        "--cookie-file": connection.cookie_file,
    }
    chosen = [flag for flag, value in modes.items() if value]
    if len(chosen) > 1:
        raise UserInputError(f"{' and '.join(chosen)}: use one credential mode at a time")
    if chosen and chosen[0] != "--token-file":
        token = None  # an explicit mode wins over $KFP_TOKEN
    if chosen and chosen[0] != "--cookie-file":
        cookie = None
    if chosen and chosen[0] in ("--iap-client-id", "--cookie-file") and not connection.host:
        raise UserInputError(f"{chosen[0]} needs --host: the URL of the protected Kubeflow")

    arguments: dict[str, Any] = {"host": connection.host or None}
    if connection.namespace:
        arguments["namespace"] = connection.namespace
    if connection.token_file:
        token = _read_secret(connection.token_file, "--token-file")
    if token:
        arguments["existing_token"] = token
    if connection.sa_token:
        from kfp.client import ServiceAccountTokenVolumeCredentials

        _read_secret(connection.sa_token, "--sa-token")  # fail now, not on the first request
        arguments["credentials"] = ServiceAccountTokenVolumeCredentials(connection.sa_token)
    if connection.iap_client_id:
        arguments["client_id"] = connection.iap_client_id
    if connection.cookie_file:
        cookie = _read_secret(connection.cookie_file, "--cookie-file")
    if cookie:
        if "=" not in cookie:
            raise UserInputError(
                "the session cookie must read name=value (e.g. oauth2_proxy_kubeflow=...), as "
                "the browser's Cookie header shows it"
            )
        arguments["cookies"] = cookie
    if connection.ca_bundle:
        _read_secret(connection.ca_bundle, "--ca-bundle")
        arguments["ssl_ca_cert"] = connection.ca_bundle
    return arguments


def presented_credentials(
    connection: KFPConnection, environ: Mapping[str, str] | None = None
) -> str | None:
    """What the client sends to prove who it is, as a message names it (None: nothing)."""
    environ = os.environ if environ is None else environ
    if connection.token_file:
        return f"the bearer token in --token-file {connection.token_file}"
    if connection.sa_token:
        return f"the service-account token in --sa-token {connection.sa_token}"
    if connection.iap_client_id:
        return f"the IAP credentials for client id {connection.iap_client_id}"
    if connection.cookie_file:
        return f"the session cookie in --cookie-file {connection.cookie_file}"
    if environ.get(TOKEN_ENV):
        return f"the bearer token in ${TOKEN_ENV}"
    if environ.get(COOKIE_ENV):
        return f"the session cookie in ${COOKIE_ENV}"
    return None


def explain_server_error(error: BaseException, connection: KFPConnection) -> str | None:
    """One line for an error of the KFP API or of the connection to it (None: not one of those).

    It never quotes the response: a server or proxy may echo the request, credentials included.
    """
    status = getattr(error, "status", None)
    where = connection.describe()
    headers = getattr(error, "headers", None) or {}
    server = headers.get("server") or headers.get("Server") if hasattr(headers, "get") else None
    by = f" (answered by {server})" if server else ""
    credentials = presented_credentials(connection)
    if isinstance(status, int) and status in (401, 403):
        if status == 401 and credentials:
            return (
                f"{where} answered 401 Unauthorized{by}: it rejected {credentials} (expired, "
                "revoked or issued for another audience); get a new one and try again"
            )
        if status == 401 or not credentials:
            return (
                f"{where} answered {status}{by} to a request without credentials: give them "
                f"with {CREDENTIAL_HINT}"
            )
        namespace = connection.namespace or "the default namespace"
        return (
            f"{where} answered 403 Forbidden{by} for {namespace}: it accepted {credentials} but "
            "they lack access; use --namespace with a profile you belong to, or ask its owner "
            "for a contributor RoleBinding"
        )
    if isinstance(status, int) and status == 404:
        return (
            f"{where} answered 404 Not Found: --host must be the pipeline API root "
            "(e.g. https://kubeflow.example.com/pipeline)"
        )
    if isinstance(status, int) and status >= 500:
        reason = getattr(error, "reason", "") or "server error"
        return f"{where} answered {status} {reason}: the KFP API server failed; try again later"
    text = f"{type(error).__name__}: {error}"
    if any(
        marker in text
        for marker in ("MaxRetryError", "NewConnectionError", "ConnectionRefused", "SSLError")
    ) or isinstance(error, ConnectionError):
        if "SSL" in text or "CERTIFICATE" in text.upper():
            return (
                f"cannot reach {where}: TLS verification failed; pass the server's CA with "
                "--ca-bundle PATH"
            )
        return (
            f"cannot reach {where}: check --host (e.g. https://kubeflow.example.com/pipeline) "
            "and the network, or port-forward: kubectl -n kubeflow port-forward "
            "svc/ml-pipeline-ui 8080:80"
        )
    return None
