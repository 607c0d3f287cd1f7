"""One custom job object (TrainJob or TFJob) on the API server: create it (strict field
validation, older API shapes, a terminating namesake waited out, a 409 re-attached to), read it
and delete it, retrying transient failures."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mlm.launch.job_errors import (
    REQUEST_TIMEOUT_S,
    JobLaunchError,
    create_error,
    transient_errors,
    unknown_fields,
)
from mlm.launch.job_specs import TRAINJOB_APIS, JobKind

# The launcher's logger: what the job object does is part of the launch a user follows.
logger = logging.getLogger("mlm.launch.kubernetes")


# How long to wait for a job of the same name that is being deleted before recreating it.
TERMINATING_POLLS = 60


TERMINATING_POLL_S = 5.0


class _UnknownFieldsError(Exception):
    """A strict create named fields the cluster's CRD does not have."""

    def __init__(self, cause: Any, fields: list[str]) -> None:
        super().__init__(", ".join(fields))
        self.cause, self.fields = cause, fields


class Job:
    """One custom job object: create, read and delete it, retrying transient failures."""

    def __init__(
        self, custom: Any, launcher: str, kind: JobKind, coordinates: tuple, name: str
    ) -> None:
        self.custom, self.launcher, self.kind = custom, launcher, kind
        self.coordinates, self.name = coordinates, name
        self.api: str | None = None  # the API shape the job was created in

    @property
    def namespace(self) -> str:
        return self.coordinates[2]

    def create(
        self,
        manifests: Sequence[tuple[str, Mapping[str, Any]]],
        service_account: str | None,
        sleep: Callable,
    ) -> bool:
        """Creates the job; True when it already existed (a retried step re-attaches).

        `manifests` are the job in each API shape the launcher can write, newest first (see
        `job_specs.job_manifests`). Each is sent with `fieldValidation=Strict`, so an API server
        whose CRD lacks a field refuses it (HTTP 400) instead of silently pruning it; the next
        shape is then tried. A job of the same name that is still being deleted (an earlier
        attempt's, deleted when it failed) is waited out and then created anew.
        """
        for index, (api, manifest) in enumerate(manifests):
            try:
                attached = self._create_waiting_out_deletion(manifest, service_account, sleep)
            except _UnknownFieldsError as error:
                if index == len(manifests) - 1:
                    raise create_error(
                        error.cause, self.kind, self.name, self.namespace, service_account
                    ) from None
                logger.warning(
                    "the cluster's %s API has no %s; writing the %s shape instead",
                    self.kind.kind,
                    ", ".join(error.fields),
                    manifests[index + 1][0],
                )
                continue
            self.api = api
            if index:
                logger.warning(
                    "%s %s/%s uses %s (%s): it has no activeDeadlineSeconds, so this launcher "
                    "enforces the job timeout itself",
                    self.kind.kind,
                    self.namespace,
                    self.name,
                    api,
                    TRAINJOB_APIS.get(api, api),
                )
            return attached
        raise AssertionError("no manifest to create")

    def _create_waiting_out_deletion(
        self, manifest: Mapping[str, Any], service_account: str | None, sleep: Callable
    ) -> bool:
        for _ in range(TERMINATING_POLLS):
            attached = self._create_once(manifest, service_account, sleep)
            if not attached or not self._terminating():
                return attached
            logger.info("%s %s is still being deleted; waiting to create it anew", *self._id())
            sleep(TERMINATING_POLL_S)
        raise JobLaunchError(
            "cannot create {0} {1}: an earlier {0} of that name has been terminating for over "
            "{2:g} s (a stuck finalizer?); delete it: kubectl -n {3} delete {4} {5}".format(
                *self._id(),
                TERMINATING_POLLS * TERMINATING_POLL_S,
                self.namespace,
                self.kind.plural,
                self.name,
            )
        )

    def _id(self) -> tuple[str, str]:
        return self.kind.kind, f"{self.namespace}/{self.name}"

    def _served(self) -> bool | None:
        """Whether the cluster serves this job kind (API discovery, which RBAC grants every
        authenticated user: the `system:discovery` ClusterRole); None when that cannot be told.

        RBAC decides before the API server looks the resource up, so a service account without
        rights to a kind that is not installed gets 403, not 404: this tells the two apart."""
        from kubernetes.client.exceptions import ApiException

        group, version = self.kind.group, self.kind.version
        try:
            found = self.custom.api_client.call_api(
                f"/apis/{group}/{version}",
                "GET",
                response_type="object",
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _request_timeout=REQUEST_TIMEOUT_S,
            )
        except ApiException as error:
            return False if error.status == 404 else None
        except transient_errors():
            return None
        resources = (found or {}).get("resources") or []
        return any(resource.get("name") == self.kind.plural for resource in resources)

    def _terminating(self) -> bool:
        """Whether the existing job is being deleted (or already gone)."""
        from kubernetes.client.exceptions import ApiException

        try:
            job = self.get()
        except ApiException:
            return True  # 404: gone in the meantime, so create it
        return bool(((job or {}).get("metadata") or {}).get("deletionTimestamp"))

    def _create_once(
        self,
        manifest: Mapping[str, Any],
        service_account: str | None,
        sleep: Callable[[float], None],
        attempts: int = 4,
    ) -> bool:
        from kubernetes.client.exceptions import ApiException

        for attempt in range(1, attempts + 1):
            try:
                self.custom.create_namespaced_custom_object(
                    *self.coordinates,
                    manifest,
                    field_validation="Strict",
                    _request_timeout=REQUEST_TIMEOUT_S,
                )
                logger.info("created %s %s/%s", self.kind.kind, self.namespace, self.name)
                return False
            except ApiException as error:
                if error.status == 409:
                    logger.info(
                        "%s %s/%s exists; waiting for it", self.kind.kind, self.namespace, self.name
                    )
                    return True
                fields = unknown_fields(error)
                if fields:
                    raise _UnknownFieldsError(error, fields) from None
                retryable = error.status in (429, 500, 502, 503, 504)
                if not retryable or attempt == attempts:
                    raise create_error(
                        error,
                        self.kind,
                        self.name,
                        self.namespace,
                        service_account,
                        served=self._served() if error.status == 403 else None,
                    ) from None
                reason = f"HTTP {error.status}"
            except transient_errors() as error:
                if attempt == attempts:
                    raise JobLaunchError(
                        f"cannot create {self.kind.kind} {self.namespace}/{self.name}: the "
                        f"Kubernetes API is unreachable ({type(error).__name__}: {error}); "
                        "check the cluster's API server and this pod's network"
                    ) from None
                reason = type(error).__name__
            logger.warning("creating %s failed (%s); retrying", self.name, reason)
            sleep(2.0 * attempt)
        raise AssertionError("unreachable")

    def get(self) -> dict | None:
        """The job, or None when reading it failed transiently. Raises ApiException 404."""
        from kubernetes.client.exceptions import ApiException

        try:
            return self.custom.get_namespaced_custom_object(
                *self.coordinates, self.name, _request_timeout=REQUEST_TIMEOUT_S
            )
        except ApiException as error:
            if error.status == 404:
                raise
            reason = f"HTTP {error.status}"
        except transient_errors() as error:
            reason = type(error).__name__
        # Throttling, a restarting API server, a dropped connection: keep waiting.
        logger.warning("reading %s %s failed (%s); retrying", self.kind.kind, self.name, reason)
        return None

    def delete(self) -> bool:
        """Deletes the job and its pods; True when it is gone."""
        from kubernetes.client import V1DeleteOptions
        from kubernetes.client.exceptions import ApiException

        for attempt in range(3):
            try:
                self.custom.delete_namespaced_custom_object(
                    *self.coordinates,
                    self.name,
                    body=V1DeleteOptions(propagation_policy="Background"),
                    _request_timeout=REQUEST_TIMEOUT_S,
                )
                return True
            except ApiException as error:
                if error.status == 404:
                    return True
                logger.warning(
                    "could not delete %s %s: %s", self.kind.kind, self.name, error.reason
                )
                if error.status not in (429, 500, 502, 503, 504):
                    return False
            except transient_errors() as error:
                logger.warning("could not delete %s %s: %s", self.kind.kind, self.name, error)
            time.sleep(1.0 + attempt)
        return False


def list_pods(core: Any, job: Job) -> list[Any]:
    """The job's pods (empty when listing fails: watching goes on)."""
    from kubernetes.client.exceptions import ApiException

    try:
        return core.list_namespaced_pod(
            job.namespace,
            label_selector=f"{job.kind.pod_label}={job.name}",
            _request_timeout=REQUEST_TIMEOUT_S,
        ).items
    except (ApiException, *transient_errors()) as error:
        logger.warning("listing the pods of %s failed (%s)", job.name, error)
        return []
