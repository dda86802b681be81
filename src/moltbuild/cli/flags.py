"""The build flags, each declared once: name, default, help, and where its value goes (a field of
plan.request.BuildRequest, or a setting it overrides with the flag as the source). `build`,
`kaniko.build` and `pipeline` take the subset that applies; invoke reads a task's flags from its
signature and `help=`, and `command` makes both from this table, so a flag cannot mean two things."""

from __future__ import annotations

import inspect
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from invoke import Task, task

from moltbuild.cli import count, edge
from moltbuild.plan.request import image_of

if TYPE_CHECKING:
    from moltbuild.plan.request import BuildRequest

ONLY = "only"  # the field --only and every --NAME-only fill (plan.request.selection reads them)


def _same(value: Any) -> Any:
    return value


def _switch(value: bool) -> str | None:
    """An on/off setting a flag can only turn on: without the flag, the setting decides."""
    return "1" if value else None


@dataclass(frozen=True)
class Flag:
    name: str  # the parameter; invoke types it as --name, no_cache as --no-cache
    default: Any
    help: str
    field: str = ""  # the BuildRequest field it fills ...
    setting: str = ""  # ... or the setting it overrides
    value: Callable[[Any], Any] = _same
    repeatable: bool = False

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")


def _shorthand(name: str) -> Flag:
    """`--NAME-only`: the image NAME alone, the name read from the flag (plan.request.image_of)."""
    image = image_of(name.replace("_", "-"))
    return Flag(name, False, f"build only the {image} image (as --only {image})", field=ONLY)


FLAGS = {
    flag.name: flag
    for flag in (
        Flag(
            "push",
            False,
            "push every tag after building (kaniko.build: the default; --no-push keeps nothing)",
            field="push",
        ),
        _shorthand("api_only"),
        _shorthand("frontend_only"),
        Flag(ONLY, "", "comma list of image names to build", field=ONLY),
        Flag(
            "tag",
            None,
            "extra tag (repeatable); added to the planned ones ([tool.moltbuild] tags, latest)",
            field="tags",
            value=lambda tags: tuple(tags or ()),
            repeatable=True,
        ),
        Flag(
            "backend",
            None,
            "auto|docker|buildah (default: MOLTBUILD_BACKEND or auto)",
            setting="MOLTBUILD_BACKEND",
        ),
        Flag("platform", None, "comma list, e.g. linux/amd64,linux/arm64", field="platform"),
        Flag(
            "no_cache",
            False,
            "do not reuse cached layers, local or in the registry (REPO/cache)",
            field="no_cache",
        ),
        Flag(
            "jobs", "2", "images built at once (default 2)", field="jobs", value=lambda n: count(n, "--jobs")
        ),
        Flag(
            "force",
            False,
            "use the docker backend even on nested overlay (to build although unchanged: --rebuild)",
            field="force",
        ),
        Flag(
            "rebuild",
            False,
            "build even when the registry has an image with the same inputs",
            field="rebuild",
        ),
        Flag(
            "changed",
            False,
            "only images whose inputs changed since --base (GitHub's event base, else HEAD^)",
            field="changed",
        ),
        Flag("base", None, "git revision --changed compares with", field="base"),
        Flag(
            "no_deps",
            False,
            "with --only: not the project images it is built FROM (those are used as the registry "
            "has them, by their input tag)",
            field="no_deps",
        ),
        Flag(
            "no_smoke",
            False,
            "do not start the image and check its HEALTHCHECK and probe paths before the push",
            field="smoke",
            value=operator.not_,
        ),
        Flag(
            "dry_run",
            False,
            "print the plan and the exact commands (kaniko.build: the Job manifests); run nothing",
            field="dry_run",
        ),
        Flag(
            "json",
            False,
            "print the report entries as JSON on stdout (progress goes to stderr)",
            field="as_json",
        ),
        Flag(
            "verbose",
            False,
            "print every command and all tool output (always in build/logs/NAME.log)",
            setting="MOLTBUILD_VERBOSE",
            value=_switch,
        ),
        Flag(
            "namespace",
            None,
            "namespace of the Jobs, Secret and RBAC (default MOLTBUILD_KUBE_NAMESPACE)",
            setting="MOLTBUILD_KUBE_NAMESPACE",
        ),
        Flag(
            "context",
            None,
            "kubeconfig context (default MOLTBUILD_KUBE_CONTEXT or the current one)",
            setting="MOLTBUILD_KUBE_CONTEXT",
        ),
        Flag(
            "timeout",
            None,
            "seconds a Job may take (default MOLTBUILD_KANIKO_TIMEOUT or 1800)",
            setting="MOLTBUILD_KANIKO_TIMEOUT",
        ),
        Flag(  # `invoke verify` only: the run's policy (supply.check.Policy), not a build setting
            "require_signed",
            False,
            "fail every unsigned or unattested image, even when no signing or verify key is set",
        ),
        Flag(
            "keep",
            False,
            "keep the finished Jobs (debugging); dev: leave its containers or dev-namespace objects on exit",
            setting="MOLTBUILD_KANIKO_KEEP",
            value=_switch,
        ),
        # invoke dev: its request is dev.loop.DevRequest (cli/dev.py fills it from these)
        Flag("local", False, "dev: run the images with podman (or docker) on 127.0.0.1 (the default)"),
        Flag("cluster", False, "dev: build, push to MOLTBUILD_REGISTRY and deploy into the dev namespace"),
        Flag(
            "builder", None, "dev: the backend the loop builds with (kaniko: in the cluster, --cluster only)"
        ),
        Flag(
            "once", False, "dev: one cycle (build, deploy, wait until ready, print the URLs), then clean up"
        ),
    )
}


def helps(*names: str) -> dict[str, str]:
    """The help of these flags, keyed as invoke's `help=` wants them."""
    return {FLAGS[name].option[2:]: FLAGS[name].help for name in names}


def command(names: Iterable[str], **defaults: Any) -> Callable[[Callable[..., Any]], Task]:
    """A task (behind the edge) whose flags are `names`, in this order (invoke gives short flags
    by it), with the table's defaults unless the command gives its own. The body gets the flags
    as keyword arguments."""
    chosen = [FLAGS[name] for name in names]

    def make(body: Callable[..., Any]) -> Task:
        given = inspect.Parameter.POSITIONAL_OR_KEYWORD
        params = [inspect.Parameter("c", given)]
        params += [inspect.Parameter(f.name, given, default=defaults.get(f.name, f.default)) for f in chosen]
        body.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        repeatable = [f.name for f in chosen if f.repeatable]
        return task(edge(body), help=helps(*(f.name for f in chosen)), iterable=repeatable)

    return make


def overrides(given: Mapping[str, Any]) -> dict[str, tuple[Any, str]]:
    """The settings the given flags override: KEY -> (value, flag) for run_context."""
    chosen = [(FLAGS[name], raw) for name, raw in given.items()]
    return {flag.setting: (flag.value(raw), flag.option) for flag, raw in chosen if flag.setting}


def build_request(given: Mapping[str, Any]) -> tuple[BuildRequest, dict[str, tuple[Any, str]]]:
    """The request the given flags make, and the settings they override."""
    from moltbuild.plan.request import BuildRequest, selection

    settings = overrides(given)
    fields: dict[str, Any] = {}
    shorthands = []
    for name, raw in given.items():
        flag = FLAGS[name]
        if flag.field == ONLY:
            shorthands += [flag.option] if name != ONLY and raw else []
        elif flag.field:
            fields[flag.field] = flag.value(raw)
    return BuildRequest(**fields, only=selection(given.get(ONLY, ""), shorthands)), settings
