"""Kubernetes RBAC authorization, small enough to read, for checking that every API call the
launcher makes is allowed by the roles bound where the job lands.

What it follows (kubernetes/kubernetes plugin/pkg/auth/authorizer/rbac/rbac.go and
pkg/apis/rbac/v1/evaluation_helpers.go, and the docs page "Using RBAC Authorization"):

- a request is allowed when any rule of any role bound to the subject allows it; nothing denies;
- a RoleBinding grants its Role or ClusterRole in the binding's namespace only; a
  ClusterRoleBinding grants its ClusterRole everywhere;
- a rule matches when its apiGroups, resources and verbs each contain the request's value or `*`;
  a subresource is named `resource/subresource` (`pods/log`), and `*/sub` or `resource/*`
  match as wildcards; `resourceNames`, when set, must contain the object's name (so they never
  allow `list`, `watch` of a collection or `create`);
- an aggregated ClusterRole (`aggregationRule.clusterRoleSelectors`) holds the rules of every
  ClusterRole whose labels match one of its selectors, recursively (the controller-manager's
  clusterrole-aggregation controller does this on a cluster);
- the request's verb comes from the HTTP method (GET on an object: get; on a collection: list,
  or watch with `watch=true`; POST: create; PUT: update; PATCH: patch; DELETE: delete).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_CORE = re.compile(
    r"^/api/v1/namespaces/(?P<ns>[^/]+)/(?P<resource>[^/]+)(?:/(?P<name>[^/]+)(?:/(?P<sub>[^/]+))?)?$"
)
_GROUP = re.compile(
    r"^/apis/(?P<group>[^/]+)/[^/]+/namespaces/(?P<ns>[^/]+)/(?P<resource>[^/]+)"
    r"(?:/(?P<name>[^/]+)(?:/(?P<sub>[^/]+))?)?$"
)
# Non-resource URLs of API discovery (kubernetes plugin/pkg/auth/authorizer/rbac/bootstrappolicy
# policy.go: ClusterRole system:discovery, bound to the group system:authenticated).
_DISCOVERY_PATH = re.compile(r"^/apis?(/[^/]+){0,2}/?$")
_METHOD_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


@dataclass(frozen=True)
class Request:
    """The attributes RBAC decides on."""

    verb: str
    group: str
    resource: str  # with its subresource: "pods/log"
    namespace: str
    name: str | None = None

    def describe(self, user: str) -> str:
        """The API server's refusal text (k8s.io/apiserver endpoints/handlers/responsewriters
        `forbiddenMessage`)."""
        resource, _, subresource = self.resource.partition("/")
        what = f'resource "{resource}"' + (
            f' with subresource "{subresource}"' if subresource else ""
        )
        qualified = f"{resource}.{self.group}" if self.group else resource
        named = f' "{self.name}"' if self.name else ""
        return (
            f'{qualified}{named} is forbidden: User "{user}" cannot {self.verb} {what} in API '
            f'group "{self.group}" in the namespace "{self.namespace}"'
        )


def request_of(method: str, path: str, query: Mapping[str, str]) -> Request:
    """The RBAC attributes of a namespaced API request."""
    match = _GROUP.match(path) or _CORE.match(path)
    if match is None:
        raise ValueError(f"not a namespaced resource path: {path}")
    parts = match.groupdict()
    resource = parts["resource"] + (f"/{parts['sub']}" if parts.get("sub") else "")
    if method == "GET":
        if parts["name"] is None:
            verb = "watch" if query.get("watch") in ("true", "True", "1") else "list"
        else:
            verb = "get"
    else:
        verb = _METHOD_VERBS[method]
    return Request(verb, parts.get("group") or "", resource, parts["ns"], parts["name"])


def _matches(values: Iterable[str], wanted: str) -> bool:
    return "*" in values or wanted in values


def _resource_matches(resources: Iterable[str], wanted: str) -> bool:
    resources = list(resources)
    if "*" in resources or wanted in resources:
        return True
    base, _, sub = wanted.partition("/")
    return bool(sub) and (f"*/{sub}" in resources or f"{base}/*" in resources)


def rule_allows(rule: Mapping[str, Any], request: Request) -> bool:
    if not _matches(rule.get("verbs", []), request.verb):
        return False
    if not _matches(rule.get("apiGroups", []), request.group):
        return False
    if not _resource_matches(rule.get("resources", []), request.resource):
        return False
    names = rule.get("resourceNames") or []
    return not names or (request.name is not None and request.name in names)


def _selected(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    if set(selector) - {"matchLabels", "matchExpressions"}:
        raise ValueError(f"unsupported selector {selector}")
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


class Authorizer:
    """RBAC over a set of Role, ClusterRole, RoleBinding and ClusterRoleBinding objects."""

    def __init__(self, objects: Iterable[Mapping[str, Any]]) -> None:
        self.roles: dict[tuple[str, str], Mapping[str, Any]] = {}
        self.cluster_roles: dict[str, Mapping[str, Any]] = {}
        self.bindings: list[Mapping[str, Any]] = []
        for obj in objects:
            kind, meta = obj.get("kind"), obj["metadata"]
            if kind == "Role":
                self.roles[(meta["namespace"], meta["name"])] = obj
            elif kind == "ClusterRole":
                self.cluster_roles[meta["name"]] = obj
            elif kind in ("RoleBinding", "ClusterRoleBinding"):
                self.bindings.append(obj)

    def cluster_role_rules(self, name: str, seen: frozenset[str] = frozenset()) -> list[dict]:
        """A ClusterRole's rules, with those it aggregates."""
        role = self.cluster_roles.get(name)
        if role is None or name in seen:
            return []
        rules = list(role.get("rules") or [])
        for selector in (role.get("aggregationRule") or {}).get("clusterRoleSelectors", []):
            for other, candidate in self.cluster_roles.items():
                labels = candidate["metadata"].get("labels") or {}
                if other != name and _selected(selector, labels):
                    rules += self.cluster_role_rules(other, seen | {name})
        return rules

    def _binding_rules(self, binding: Mapping[str, Any]) -> list[dict]:
        ref = binding["roleRef"]
        if ref["kind"] == "ClusterRole":
            return self.cluster_role_rules(ref["name"])
        role = self.roles.get((binding["metadata"]["namespace"], ref["name"]))
        return list((role or {}).get("rules") or [])

    def allowed(self, service_account: tuple[str, str], request: Request) -> bool:
        """Whether ServiceAccount (namespace, name) may make `request`."""
        namespace, name = service_account
        for binding in self.bindings:
            subjects = binding.get("subjects") or []
            if not any(
                s.get("kind") == "ServiceAccount"
                and s.get("name") == name
                and s.get("namespace", binding["metadata"].get("namespace")) == namespace
                for s in subjects
            ):
                continue
            if binding["kind"] == "RoleBinding" and (
                binding["metadata"]["namespace"] != request.namespace
            ):
                continue
            if any(rule_allows(rule, request) for rule in self._binding_rules(binding)):
                return True
        return False

    def hook(self, service_account: tuple[str, str], refused: list[Request] | None = None):
        """A `FakeKubernetes.authorize` hook for requests made as `service_account`; each refused
        request is appended to `refused`."""
        user = f"system:serviceaccount:{service_account[0]}:{service_account[1]}"

        def authorize(method: str, path: str, query: Mapping[str, str]) -> str | None:
            if _DISCOVERY_PATH.match(path) and method == "GET":
                return None  # the system:discovery ClusterRole, bound to system:authenticated
            request = request_of(method, path, query)
            if self.allowed(service_account, request):
                return None
            if refused is not None:
                refused.append(request)
            return request.describe(user)

        return authorize
