"""How the Kubernetes launcher talks about failures: its exceptions, the API calls' timeout and
retry rule, and the one-line wording of a refused job creation (what went wrong, what to do).

`mlm.errors` prints a `JobLaunchError` as one line; a failed, timed-out or cancelled job keeps
its message (worker, reason, log tail) too.
"""

from __future__ import annotations

import json
import re
from typing import Any

from mlm.launch.job_specs import RUNTIME_NAME, TRAINJOB_APIS, JobKind


class JobFailedError(RuntimeError):
    """A training job failed. The message names the failing worker, its reason and its log tail.

    Attributes:
        name: the job's name.
        worker: the first failed pod (None when no pod could be found).
        reason: the container's or the job's failure reason.
        log_tail: the last lines of the failed worker's log ("" when unavailable).
    """

    def __init__(
        self, message: str, *, name: str, worker: str | None, reason: str, log_tail: str
    ) -> None:
        super().__init__(message)
        self.name = name
        self.worker = worker
        self.reason = reason
        self.log_tail = log_tail


class JobTimeoutError(TimeoutError):
    """A training job did not finish within its timeout (it is deleted unless kept)."""


class JobLaunchError(RuntimeError):
    """A training job could not be created, or its workers cannot start. The message is one line
    naming the cause and the fix."""


class JobCancelledError(RuntimeError):
    """The launcher was terminated (SIGTERM or Ctrl-C) while waiting; the job was deleted."""


# (connect, read) seconds of every API call: a hung connection must not hang the step.
REQUEST_TIMEOUT_S = (10.0, 60.0)


def transient_errors() -> tuple[type[BaseException], ...]:
    """Network failures worth retrying: dropped connections, timeouts, refused connects."""
    import urllib3

    return (urllib3.exceptions.HTTPError, OSError)


def api_message(error: Any) -> str:
    """The API server's message in an ApiException (its Status body), else its reason."""
    try:
        message = json.loads(error.body or "{}").get("message")
    except (TypeError, ValueError, AttributeError):
        message = None
    return " ".join(str(message or error.reason or "").split())


# What each job kind needs installed, and which Kubeflow releases include it (kubeflow/manifests
# v1.10.2, v1.11.0 and 26.03 README and example/kustomization.yaml).
INSTALL = {
    "trainjobs": (
        "install Kubeflow Trainer v2.1 or later (Kubeflow 1.11 and 26.03 include v2.1.0, 1.10 "
        "none) and this project's ClusterTrainingRuntime (kubectl apply -k manifests/overlays/...)"
    ),
    "tfjobs": (
        "install the Kubeflow Training Operator v1.9 (Kubeflow 1.10 includes it; 1.11 and 26.03 "
        "leave it out of their default install)"
    ),
}


# Who grants the job rights in each kind of install (docs/operators.md, "Where jobs run").
GRANTS = (
    "standalone KFP: manifests/kfp-standalone (in overlays/dev and overlays/gke-gpu) binds "
    "kubeflow/pipeline-runner the Role mlm-pipeline-launcher; "
    "multi-user Kubeflow: a profile's default-editor gets TrainJobs from Kubeflow Trainer's "
    "kubeflow-trainer-edit role and TFJobs from the Training Operator's kubeflow-training-edit"
)


def unknown_fields(error: Any) -> list[str]:
    """The fields a `fieldValidation=Strict` create names as unknown (HTTP 400 "strict decoding
    error: unknown field \"spec.x\""), else []."""
    if getattr(error, "status", None) != 400:
        return []
    return re.findall(r'unknown field \\?"([^"\\]+)\\?"', api_message(error))


def create_error(
    error: Any,
    kind: JobKind,
    name: str,
    namespace: str,
    service_account: str | None,
    served: bool | None = None,
) -> JobLaunchError:
    """One line for an ApiException on create: what went wrong and what to do (`served`: whether
    API discovery lists the kind, asked after a 403)."""
    message = api_message(error)
    where = f"{kind.kind} {namespace}/{name}"
    if "admission webhook" in message:
        if "must be created before the TrainJob" in message:
            return JobLaunchError(
                f"cannot create {where}: the ClusterTrainingRuntime {RUNTIME_NAME} is not "
                f"installed ({message}); apply it with kubectl apply -k manifests/overlays/... "
                "(manifests/base/runtime)"
            )
        return JobLaunchError(
            f"cannot create {where}: the cluster's admission webhook refused it ({message}); "
            "check the installed Kubeflow Trainer / Training Operator version against "
            "docs/operators.md"
        )
    fields = unknown_fields(error)
    if fields:
        supported = (
            ", ".join(TRAINJOB_APIS.values())
            if kind.plural == "trainjobs"
            else "the Training Operator v1.9"
        )
        return JobLaunchError(
            f"cannot create {where}: the cluster's {kind.kind} API has no {', '.join(fields)} "
            f"(HTTP 400: {message}); this launcher writes {kind.kind}s for {supported}: install "
            "one of them (docs/operators.md)"
        )
    if error.status == 403 and served is False:
        return JobLaunchError(
            f"cannot create {where}: the {kind.kind} API ({kind.api_version}, {kind.plural}) is "
            f"not installed in this cluster (HTTP 403, and API discovery does not list it); "
            f"{INSTALL[kind.plural]}, or use another launcher"
        )
    if error.status == 404:
        if "namespace" in message.lower():
            return JobLaunchError(
                f"cannot create {where}: namespace {namespace!r} does not exist ({message}); "
                "create it or run the step in the namespace the jobs should use"
            )
        return JobLaunchError(
            f"cannot create {where}: the {kind.kind} API ({kind.api_version}, {kind.plural}) is "
            f"not installed in this cluster (HTTP 404); {INSTALL[kind.plural]}, or use another "
            "launcher"
        )
    if error.status == 403 and "quota" in message.lower():
        return JobLaunchError(
            f"cannot create {where}: a ResourceQuota refuses it ({message}); ask for a larger "
            f"quota in namespace {namespace} or request fewer workers, GPUs, CPU or memory"
        )
    if error.status == 403:
        return JobLaunchError(
            f"cannot create {where}: this step's service account may not create "
            f"{kind.plural}.{kind.group} in namespace {namespace} (HTTP 403: {message}); "
            f"{GRANTS}"
        )
    if error.status == 401:
        return JobLaunchError(
            f"cannot create {where}: the Kubernetes API refused the credentials (HTTP 401); "
            "check the pod's service account token or KUBECONFIG"
        )
    if error.status in (400, 422):
        return JobLaunchError(
            f"cannot create {where}: the cluster rejected it (HTTP {error.status}: {message}); "
            "check the worker settings (image, resources, node selector, tolerations)"
        )
    sa = f" as service account {service_account}" if service_account else ""
    return JobLaunchError(
        f"cannot create {where}{sa}: HTTP {error.status} {message}; check the API server"
    )
