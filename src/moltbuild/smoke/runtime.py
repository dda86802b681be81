"""The container runtime a smoke check drives (podman on buildah's storage, or docker: the same CLI
verbs) and what an image's config and the --env-file say: its HEALTHCHECK, its EXPOSEd ports, the
variables a container can be given."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from moltbuild.settings import Secret
from moltbuild.smoke.probes import Healthcheck
from moltbuild.system import owners
from moltbuild.system.processes import Result, Runner

_NS = 1e9
# podman (pkg/env ParseFile) and docker (cli opts/file.go) read --env-file alike: a KEY=VALUE
# line each, the value verbatim after the first '=' (spaces and quotes kept), lines read by Go's
# bufio.Scanner (under 64 KiB each, a trailing CR dropped). A name without '=' would import the
# CLI's own variable of that name: every line written has one. (podman 4.7.0 alone, reverted in
# 4.7.1, read quoted values over several lines.)
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")  # Kubernetes' rule for a variable's name
_ENV_LINE_MAX = 64 * 1024  # bytes of one line with its newline: bufio.MaxScanTokenSize


SMOKE_LABEL = "dev.moltbuild.smoke"  # on every smoke container: the owning process's token


class ContainerRuntime:
    """podman (on buildah's storage) or docker: the same CLI verbs, through the runner."""

    def __init__(
        self, runner: Runner, argv: list[str], *, run_flags: tuple[str, ...] = (), env: dict | None = None
    ):
        self.runner, self.argv, self.run_flags, self.env = runner, argv, run_flags, env or {}

    def __call__(self, *args: str, check: bool = True, timeout: float = 60, mutates: bool = True) -> Any:
        return self.runner.run(
            [*self.argv, *args], env=self.env, check=check, timeout=timeout, mutates=mutates
        )

    def use_oci(self, name: str) -> None:
        """Start containers with podman's OCI runtime `name` from now on (this object's run)."""
        self.argv = [self.argv[0], "--runtime", name, *self.argv[1:]]

    def remove(self, container: str) -> None:
        """Kill, then remove: an app that ignores SIGTERM as PID 1 (busybox httpd) would hold
        `rm -f` for its 10 s stop timeout."""
        self("kill", container, check=False, timeout=60)
        self("rm", "-f", container, check=False, timeout=60)

    def logs(self, container: str) -> Result:
        """The container's whole log (stdout and stderr). Never `--tail`: podman 4.3 (Debian 12;
        fixed upstream by containers/podman#19562) loses or misplaces the text of a line written in
        two pieces (a k8s-file `P` record), as Python writes an exception's message and its newline:
        on a busy machine the log of `raise SystemExit("...")` came back empty."""
        return self("logs", container, check=False, timeout=60, mutates=False)

    def has_image(self, image: str) -> bool:
        return self("image", "inspect", "--format", "{{.Id}}", image, check=False, mutates=False).ok

    def reap_smoke(self) -> list[str]:
        """Remove smoke containers (by their label) whose owning process is gone: a run killed
        with SIGKILL left them running with their ports. Never a container without the label."""
        listed = self("ps", "-a", "-q", "--filter", f"label={SMOKE_LABEL}", check=False, mutates=False)
        ids = listed.stdout.split() if listed.ok else []
        if not ids:
            return []
        fmt = f'{{{{.Id}}}} {{{{index .Config.Labels "{SMOKE_LABEL}"}}}}'
        res = self("inspect", "--format", fmt, *ids, check=False, mutates=False)
        rows = [line.split() for line in res.stdout.splitlines()]
        dead = [row[0] for row in rows if len(row) == 2 and not owners.alive(row[1])]
        for container in dead:
            self.remove(container)
        return dead

    def config(self, image: str) -> dict[str, Any]:
        out = self("image", "inspect", image, mutates=False).stdout
        data = json.loads(out or "[]")
        info = data[0] if isinstance(data, list) and data else {}
        config = dict(info.get("Config") or {})
        # podman reports a Docker-format HEALTHCHECK beside the config, docker inside it
        config.setdefault("Healthcheck", info.get("HealthCheck") or info.get("Healthcheck"))
        return config


def healthcheck_of(config: dict[str, Any]) -> Healthcheck | None:
    hc = config.get("Healthcheck") or {}
    test = list(hc.get("Test") or [])
    if not test or test[0] == "NONE":
        return None
    argv = ("/bin/sh", "-c", test[1]) if test[0] == "CMD-SHELL" else tuple(test[1:])
    return Healthcheck(
        argv,
        (hc.get("Interval") or 30 * _NS) / _NS,
        (hc.get("Timeout") or 30 * _NS) / _NS,
        (hc.get("StartPeriod") or 0) / _NS,
        int(hc.get("Retries") or 3),
    )


def exposed_ports(config: dict[str, Any]) -> set[int]:
    return {int(p.split("/")[0]) for p in (config.get("ExposedPorts") or {}) if p.split("/")[0].isdigit()}


# === the container's settings ====================================================================


def env_file(env: Iterable[tuple[str, str | Secret]]) -> tuple[str, list[str]]:
    """The --env-file text of `env` (a Secret is revealed here, into that text only) and, for each
    variable it cannot carry, "NAME (why)". Later lines win, as both runtimes read them."""
    lines, refused = [], []
    for name, value in env:
        text = value.reveal() if isinstance(value, Secret) else str(value)
        why = _env_problem(name, text)
        if why:
            refused.append(f"{name} ({why})")
        else:
            lines.append(f"{name}={text}\n")
    return "".join(lines), refused


def _env_problem(name: str, value: str) -> str:
    if not _ENV_NAME.fullmatch(name):
        return "not a variable name --env-file can pass"
    if "\n" in value or "\r" in value:
        return "its value has a line break, which --env-file cannot pass"
    if "\0" in value:
        return "its value has a NUL byte, which no environment can hold"
    try:
        size = len(f"{name}={value}\n".encode())
    except UnicodeEncodeError:
        return "its value is not valid UTF-8"
    return "its value is 64 KiB or more, longer than --env-file reads" if size >= _ENV_LINE_MAX else ""
