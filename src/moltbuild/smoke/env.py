"""The settings a workload gives the container running an image, as the smoke container gets them:
plain values and ConfigMap keys from the manifests; a Secret's keys only from the image's
`[tool.moltbuild.images.NAME.smoke] env` table (never from a cluster); pod fields not at all.
Each variable the container does not get is named with why."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from moltbuild.errors import ConfigError
from moltbuild.k8s.manifests import Manifests, Workload
from moltbuild.settings import Secret

_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")  # what Kubernetes takes as a variable name
_REFERENCE = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")  # $(VAR), $$ escapes

Value = str | Secret


@dataclass(frozen=True)
class WorkloadEnv:
    values: tuple[tuple[str, Value], ...] = ()
    missing: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()  # "NAME: why": marked optional, so a pod starts without them too


def configured_env(configured: Any, where: str) -> dict[str, Secret]:
    """`smoke.env` of an image's table: variable -> value, each a Secret (they stand in for one)."""
    if configured is None:
        return {}
    example = 'e.g. env = {DB_PASSWORD = "test-only"}'
    if not isinstance(configured, dict):
        raise ConfigError(f'{where} smoke.env must be a table of variable = "value", {example}')
    for key, value in configured.items():
        if not _NAME.fullmatch(key):
            raise ConfigError(f"{where} smoke.env: {key!r} is not a variable name; {example}")
        if not isinstance(value, str):
            raise ConfigError(f"{where} smoke.env.{key} must be a string (quote it), {example}")
    return {key: Secret(value) for key, value in configured.items()}


def workload_env(
    manifests: Manifests,
    running: list[tuple[Workload, dict[str, Any]]],
    given: Mapping[str, Secret],
    table: str,
) -> WorkloadEnv:
    """The env of the first workload running the image (its first such container), the `given`
    values over it; another workload that sets the same variables otherwise is named."""
    seen: dict[str, _Env] = {}
    for workload, container in running:
        if workload.label not in seen:  # a workload's first container running the image
            seen[workload.label] = _container_env(manifests, workload, container, given, table)
    if not seen:
        return WorkloadEnv(tuple(given.items()))
    (first_label, first), *others = seen.items()
    unset = {**first.missing, **first.optional}
    missing = {**first.missing, **_disagreements(first_label, first, others, unset)}
    values = {**first.values, **given}
    return WorkloadEnv(tuple(values.items()), _lines(missing, given), _lines(first.optional, given))


def _lines(unset: Mapping[str, str], given: Mapping[str, Secret]) -> tuple[str, ...]:
    return tuple(f"{var}: {why}" for var, why in unset.items() if var not in given)


def _disagreements(
    first_label: str, first: _Env, others: list[tuple[str, _Env]], missing: Mapping[str, str]
) -> dict[str, str]:
    """Variables another workload sets otherwise than the first (the one the check uses)."""
    found: dict[str, str] = {}
    for label, other in others:
        for var in sorted(set(first.values) | set(other.values)):
            if first.values.get(var) != other.values.get(var) and var not in missing and var not in found:
                found[var] = f"{label} sets it otherwise; the check uses {first_label}'s"
    return found


@dataclass
class _Env:
    """One container's env as it is built: later entries win, as in Kubernetes."""

    values: dict[str, Value] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    optional: dict[str, str] = field(default_factory=dict)

    def set(self, var: str, value: Value) -> None:
        self.missing.pop(var, None)
        self.optional.pop(var, None)
        self.values[var] = value

    def miss(self, var: str, why: str, *, optional: bool = False) -> None:
        self.values.pop(var, None)
        (self.missing if not optional else self.optional)[var] = why
        (self.optional if not optional else self.missing).pop(var, None)


def _container_env(
    manifests: Manifests,
    workload: Workload,
    container: dict[str, Any],
    given: Mapping[str, Secret],
    table: str,
) -> _Env:
    env = _Env()
    where = f"{workload.label} container {container.get('name') or '?'}"
    for source in _entries(container, "envFrom", where):
        _env_from(env, manifests, workload, source, given, table)
    for item in _entries(container, "env", where):
        var = item.get("name")
        if not isinstance(var, str) or not var:
            raise ConfigError(f"{where}: an env entry has no name; give each entry `name:`")
        if "valueFrom" in item:
            _value_from(env, manifests, workload, var, item["valueFrom"], given, table)
            continue
        value = item.get("value", "")
        if not isinstance(value, str):
            raise ConfigError(f"{where}: env {var} value {value!r} is not a string; quote it")
        env.set(var, _expanded(value, env.values))
    return env


def _entries(container: dict[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    entries = container.get(key) or []
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"{where}: {key} must be a list of mappings")
    return entries


def _env_from(
    env: _Env,
    manifests: Manifests,
    workload: Workload,
    source: dict[str, Any],
    given: Mapping[str, Secret],
    table: str,
) -> None:
    prefix = str(source.get("prefix") or "")
    if isinstance(source.get("configMapRef"), dict):
        ref = source["configMapRef"]
        data = manifests.config_map(workload.namespace, str(ref.get("name")))
        if data is None:
            if not ref.get("optional"):
                env.miss(f"envFrom ConfigMap {ref.get('name')}", "not in the manifests")
            return
        for key, value in data.items():
            env.set(prefix + key, value)
    elif isinstance(source.get("secretRef"), dict):
        ref = source["secretRef"]
        optional = bool(ref.get("optional"))
        env.miss(
            f"envFrom secret {ref.get('name')}",
            ("optional; " if optional else "")
            + f"its keys are not known here; the check gives only what {table} env sets "
            f"({', '.join(sorted(given)) or 'nothing'})",
            optional=optional,
        )


def _value_from(
    env: _Env,
    manifests: Manifests,
    workload: Workload,
    var: str,
    source: Any,
    given: Mapping[str, Secret],
    table: str,
) -> None:
    source = source if isinstance(source, dict) else {}
    kind = next((k for k in _VALUE_FROM if isinstance(source.get(k), dict)), None)
    if kind is None:
        env.miss(var, f"valueFrom {', '.join(map(str, source)) or '(empty)'} is not read")
        return
    _VALUE_FROM[kind](_From(env, manifests, workload, given, table), var, source[kind])


@dataclass(frozen=True)
class _From:
    """What a valueFrom may read: the manifests' ConfigMaps, the smoke table's secrets."""

    env: _Env
    manifests: Manifests
    workload: Workload
    given: Mapping[str, Secret]
    table: str


def _config_map_key(src: _From, var: str, ref: dict[str, Any]) -> None:
    name, key = ref.get("name"), ref.get("key")
    data = src.manifests.config_map(src.workload.namespace, str(name))
    if data is not None and key in data:
        src.env.set(var, data[key])
    elif not ref.get("optional"):
        why = f"has no key {key!r}" if data is not None else "is not in the manifests"
        src.env.miss(var, f"ConfigMap {name} {why}")


def _secret_key(src: _From, var: str, ref: dict[str, Any]) -> None:
    secret = f"secret {ref.get('name')}/{ref.get('key')}"
    if var in src.given:
        src.env.set(var, src.given[var])
    elif ref.get("optional"):
        src.env.miss(var, f"optional {secret}; the check runs without it, as a pod may", optional=True)
    else:
        src.env.miss(var, f"{secret}; give it in {src.table} env")


def _pod_field(src: _From, var: str, ref: dict[str, Any]) -> None:
    src.env.miss(var, f"the pod field {ref.get('fieldPath')} (only a cluster sets it)")


def _resource_field(src: _From, var: str, ref: dict[str, Any]) -> None:
    src.env.miss(var, f"the container's {ref.get('resource')} (only a cluster sets it)")


_VALUE_FROM = {
    "configMapKeyRef": _config_map_key,
    "secretKeyRef": _secret_key,
    "fieldRef": _pod_field,
    "resourceFieldRef": _resource_field,
}


def _expanded(value: str, known: Mapping[str, Value]) -> Value:
    """`$(VAR)` replaced by an earlier variable's value, as Kubernetes does (`$$` is a `$`; an
    unknown reference stays as written). A value built from a Secret is a Secret."""
    secret = False

    def replace(match: re.Match[str]) -> str:
        nonlocal secret
        if match.group(0) == "$$":
            return "$"
        found = known.get(match.group(1))
        if found is None:
            return match.group(0)
        secret = secret or isinstance(found, Secret)
        return found.reveal() if isinstance(found, Secret) else found

    text = _REFERENCE.sub(replace, value)
    return Secret(text) if secret else text
