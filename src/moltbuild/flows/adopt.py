"""`moltbuild init`: adopt moltbuild in an existing repository.

Finds the Dockerfiles (what git tracks or would track), the kustomization's `images:` and the
Deployments/StatefulSets that run them, matches each Dockerfile to an image, and writes the
`[tool.moltbuild]` table into pyproject.toml, a tasks.py and `build/` in .gitignore. It says what
it found, what it wrote and what it could not decide; it guesses nothing the files do not show
(no build args, platforms, targets or smoke checks). A second run changes nothing."""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moltbuild.errors import ConfigError, ToolMissingError
from moltbuild.files import load_yaml, read_text, write_atomic
from moltbuild.project import DEFAULT_REGISTRY, load_images
from moltbuild.refs import ImageRef, names_a_host, registry_prefix
from moltbuild.system.processes import Runner

# Dependency, output and tool folders: a Dockerfile there is someone else's.
SKIP_DIRS = frozenset({".git", "node_modules", "build", "vendor", "third_party", ".venv", "venv", ".nox"})
KUSTOMIZATIONS = ("kustomization.yml", "kustomization.yaml", "Kustomization")
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")
IGNORES_BUILD = frozenset({"build", "build/", "/build", "/build/", "**/build", "**/build/"})

# The repository's own tasks.py without the line that puts src/ on sys.path (a checkout of
# moltbuild itself needs it; a repository using the installed package does not).
# tests/unit/test_adopt.py keeps the two in step.
TASKS_PY = '''\
"""moltbuild tasks: `invoke --list`. The logic lives in the moltbuild package; this file composes."""

from invoke import Collection

from moltbuild.cli import build, core, env, gh, hints, k8s, kaniko, registry

ns = Collection()
for module in (core, build, registry):
    for task in module.ns.tasks.values():
        ns.add_task(task)
ns.add_collection(env.ns)
ns.add_collection(k8s.ns)
ns.add_collection(kaniko.ns)
ns.add_collection(gh.ns)
hints.install(ns)  # a "did you mean" after invoke's own parse errors
'''


@dataclass(frozen=True)
class Recipe:
    """A Dockerfile found: built with its folder as the context."""

    path: str  # relative to the root: api/Dockerfile
    context: str  # api/ (. for the root)
    dockerfile: str  # relative to the context: Dockerfile, Dockerfile.worker
    folder: str  # the folder's name (the repository's for a Dockerfile at the top)
    variant: str = ""  # X of Dockerfile.X or X.Dockerfile

    @property
    def base_name(self) -> str:
        return "-".join(_tokens(f"{self.folder}-{self.variant}" if self.variant else self.folder))


@dataclass
class Wanted:
    """An image the kustomization pins, and the workloads that run it."""

    ref: str  # HOST/REPOSITORY, no tag
    source: str  # the kustomization naming it
    explicit_host: bool  # the name starts with a registry host (not a Docker Hub short name)
    workloads: list[tuple[str, str]] = field(default_factory=list)  # (workload, container)

    @property
    def short(self) -> str:
        return self.ref.rsplit("/", 1)[-1]


Pair = tuple[Recipe, Wanted, str]  # a Dockerfile, the image it builds, why


@dataclass(frozen=True)
class Choice:
    """One image for the table."""

    name: str
    recipe: Recipe
    repository: str
    image: str | None  # the kustomization image it builds; None: repository from the folder
    why: str


@dataclass
class Survey:
    root: Path
    listing: str  # how the Dockerfiles were listed
    recipes: list[Recipe] = field(default_factory=list)
    kustomizations: list[str] = field(default_factory=list)
    wanted: dict[str, Wanted] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    choices: list[Choice] = field(default_factory=list)
    registry: str | None = None
    undecided: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Change:
    path: Path
    old: str | None  # None: a new file
    new: str
    what: str


def adopt(runner: Runner, path: Path | None = None, *, dry_run: bool = False) -> list[Change]:
    """Survey the repository at `path` (default: the git top level of the working directory),
    say what was found, then write (or, `dry_run`, show as diffs) what moltbuild needs."""
    survey = survey_repository(runner, path)
    for line in findings(survey):
        runner.say(line)
    changes, lines = plan_changes(survey)
    for line in lines:
        runner.say(line)
    apply(changes, survey.root, dry_run=dry_run, say=runner.say)
    return changes


# ---- where and what: the root, the Dockerfiles ------------------------------------------------


def _git_top(runner: Runner, start: Path) -> Path | None:
    try:
        result = runner.run(["git", "rev-parse", "--show-toplevel"], cwd=start, check=False, mutates=False)
    except ToolMissingError:
        return None
    top = result.stdout.strip()
    return Path(top) if result.ok and top else None


def locate(runner: Runner, path: Path | None) -> tuple[Path, bool]:
    """The root to adopt and whether git knows it."""
    if path is not None:
        root = path.expanduser().resolve()
        if not root.is_dir():
            raise ConfigError(f"{path} is not a directory; pass the repository's folder, or no PATH")
        return root, _git_top(runner, root) is not None
    here = Path.cwd()
    top = _git_top(runner, here)
    return (top.resolve(), True) if top else (here.resolve(), False)


def _is_dockerfile(name: str) -> bool:
    lower = name.lower()
    if lower.endswith(".dockerignore"):
        return False
    return lower == "dockerfile" or lower.startswith("dockerfile.") or lower.endswith(".dockerfile")


def _listed_files(runner: Runner, root: Path, in_git: bool) -> list[str]:
    if in_git:
        argv = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
        result = runner.run(argv, cwd=root, mutates=False, what="git ls-files")
        return [p for p in result.stdout.split("\0") if p]
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        found += [Path(folder, f).relative_to(root).as_posix() for f in files]
    return found


def _recipe(root: Path, rel: str) -> Recipe:
    path = Path(rel)
    parent = path.parent.as_posix()
    name, lower = path.name, path.name.lower()
    variant = name[len("dockerfile.") :] if lower.startswith("dockerfile.") else ""
    if lower.endswith(".dockerfile"):
        variant = name[: -len(".dockerfile")]
    return Recipe(
        path=rel,
        context="." if parent == "." else f"{parent}/",
        dockerfile=name,
        folder=root.name if parent == "." else path.parent.name,
        variant=variant,
    )


def find_recipes(runner: Runner, root: Path, in_git: bool) -> list[Recipe]:
    """Every Dockerfile git would track (ignored files left out), outside dependency folders."""
    recipes = []
    for rel in sorted(_listed_files(runner, root, in_git)):
        parts = rel.split("/")
        if _is_dockerfile(parts[-1]) and not SKIP_DIRS.intersection(parts[:-1]) and (root / rel).is_file():
            recipes.append(_recipe(root, rel))
    return recipes


# ---- the kustomization: images and the workloads that run them -------------------------------


def _rel(root: Path, path: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def _kustomization_in(folder: Path) -> Path | None:
    return next((folder / n for n in KUSTOMIZATIONS if (folder / n).is_file()), None)


def find_kustomizations(root: Path) -> list[Path]:
    """k8s/kustomization.y(a)ml; without one, every kustomization under k8s/, shallowest first."""
    k8s = root / "k8s"
    top = _kustomization_in(k8s)
    if top or not k8s.is_dir():
        return [top] if top else []
    found = [p for p in k8s.rglob("*") if p.name in KUSTOMIZATIONS and p.is_file()]
    found = [p for p in found if not SKIP_DIRS.intersection(p.relative_to(root).parts)]
    return sorted(found, key=lambda p: (len(p.parts), str(p)))


def _field(doc: Any, *keys: str) -> Any:
    """doc[k1][k2]...; None where a level is missing or not a mapping (a manifest is not checked)."""
    for key in keys:
        doc = doc.get(key) if isinstance(doc, dict) else None
    return doc


def _items(pod: Any, key: str) -> list[Any]:
    value = _field(pod, key)
    return value if isinstance(value, list) else []


class _Walk:
    """Reads kustomizations and the resources they list, folders and files, recursively."""

    def __init__(self, survey: Survey):
        self.survey = survey
        self.root = survey.root
        self.seen: set[Path] = set()
        self.runs: list[tuple[str, str, str]] = []  # (image, workload, container)

    def kustomization(self, path: Path) -> None:
        if path.resolve() in self.seen:
            return
        self.seen.add(path.resolve())
        rel = _rel(self.root, path)
        doc = load_yaml(path)
        if not isinstance(doc, dict):
            raise ConfigError(
                f"{path}: not a kustomization (a mapping with resources: and images:); "
                "fix it or move it out of k8s/"
            )
        for index, entry in enumerate(self.listed(doc, "images", rel)):
            self.image(rel, index, entry)
        for key in ("resources", "bases", "components"):
            for item in self.listed(doc, key, rel):
                self.resource(path.parent, str(item), rel)

    def listed(self, doc: dict[str, Any], key: str, rel: str) -> list[Any]:
        value = doc.get(key)
        if value is None or isinstance(value, list):
            return value or []
        self.survey.notes.append(f"{rel}: `{key}` is not a list: not read")
        return []

    def image(self, rel: str, index: int, entry: Any) -> None:
        where = f"{rel} images[{index}]"
        if not isinstance(entry, dict) or not entry.get("name"):
            self.survey.notes.append(f"{where} has no name: skipped")
            return
        name = str(entry["name"])
        try:
            ref = ImageRef.parse(name, f"{where}.name").bare().name
        except ConfigError as exc:
            self.survey.notes.append(f"{exc.message}: skipped")
            return
        explicit = "/" in name and names_a_host(name.split("/", 1)[0])
        self.survey.wanted.setdefault(ref, Wanted(ref, rel, explicit))

    def resource(self, base: Path, item: str, owner: str) -> None:
        target = base / item
        if target.is_dir():
            inner = _kustomization_in(target)
            if inner:
                self.kustomization(inner)
                return
            for path in sorted(target.glob("*.y*ml")):
                self.manifests(path)
        elif target.is_file():
            self.manifests(target)
        else:
            self.survey.notes.append(f"{owner} lists {item!r}, which is not here (remote?): not read")

    def manifests(self, path: Path) -> None:
        if path.resolve() in self.seen:
            return
        self.seen.add(path.resolve())
        for doc in load_yaml(path, multi=True):
            if not isinstance(doc, dict) or doc.get("kind") not in WORKLOAD_KINDS:
                continue
            name = _field(doc, "metadata", "name") or "?"
            workload = f"{_rel(self.root, path)} {doc['kind']} {name}"
            pod = _field(doc, "spec", "template", "spec")
            for container in [*_items(pod, "initContainers"), *_items(pod, "containers")]:
                if isinstance(container, dict) and container.get("image"):
                    self.runs.append((str(container["image"]), workload, str(container.get("name", ""))))

    def attach(self) -> None:
        """Each workload container to the kustomization image it runs (kustomize matches names)."""
        for image, workload, container in self.runs:
            try:
                ref = ImageRef.parse(image, f"{workload} image").bare().name
            except ConfigError:
                continue
            if ref in self.survey.wanted:
                self.survey.wanted[ref].workloads.append((workload, container))


# ---- matching ---------------------------------------------------------------------------------


def _tokens(text: str) -> tuple[str, ...]:
    return tuple(t for t in re.split(r"[^a-z0-9]+", text.lower()) if t)


def _fit(label: str, name: str) -> int:
    """2: the same words (api, api); 1: one ends or starts the other (api, moltbook-api); 0."""
    a, b = _tokens(label), _tokens(name)
    if not a or not b:
        return 0
    if a == b:
        return 2
    short, long = sorted((a, b), key=len)
    return 1 if long[: len(short)] == short or long[-len(short) :] == short else 0


def score(recipe: Recipe, wanted: Wanted) -> tuple[int, str]:
    """How well a Dockerfile fits an image: 4 its folder is the image's name, 3 a workload or
    container running the image has the folder's name, 2 and 1 the same by a word; 0 no fit."""
    best = (0, "")
    for label in filter(None, (recipe.folder, recipe.variant)):
        fit = _fit(label, wanted.short)
        if fit:
            how = "is the image's name" if fit == 2 else f"is part of the image's name {wanted.short}"
            best = max(best, (fit * 2, f"{label} {how}"))
        for workload, container in wanted.workloads:
            for kind, name in (("container", container), ("workload", workload.rsplit(" ", 1)[-1])):
                fit = _fit(label, name)
                if fit:
                    best = max(best, (fit * 2 - 1, f"{kind} {name} runs it: {workload}"))
    return best


def match(survey: Survey) -> tuple[list[Pair], set[str]]:
    """Pairs decided tier by tier (best fits first); a tie is reported, never broken by a guess.
    Returns the pairs and what a tie left undecided (Dockerfile paths and image names)."""
    fits = {}
    for recipe in survey.recipes:
        for image in survey.wanted.values():
            tier, why = score(recipe, image)
            if tier:
                fits[recipe.path, image.ref] = (tier, why)
    recipes = {r.path: r for r in survey.recipes}
    pairs, taken_r, taken_w = [], set(), set()
    for tier in (4, 3, 2, 1):
        level = [k for k, (t, _) in fits.items() if t == tier and k[0] not in taken_r and k[1] not in taken_w]
        per_r, per_w = Counter(r for r, _ in level), Counter(w for _, w in level)
        for r, w in level:
            if per_r[r] == 1 and per_w[w] == 1:
                pairs.append((recipes[r], survey.wanted[w], fits[r, w][1]))
        survey.undecided += _ties(level, per_r, per_w)
        taken_r.update(r for r, _ in level)
        taken_w.update(w for _, w in level)
    decided = {p[0].path for p in pairs} | {p[1].ref for p in pairs}
    return pairs, (taken_r | taken_w) - decided


def _ties(level: list[tuple[str, str]], per_r: Counter, per_w: Counter) -> list[str]:
    lines = []
    for w in sorted({w for _, w in level if per_w[w] > 1}):
        paths = ", ".join(sorted(r for r, x in level if x == w))
        lines.append(f"{w}: two candidates, {paths}; none written: add the right one by hand")
    for r in sorted({r for r, _ in level if per_r[r] > 1}):
        images = ", ".join(sorted(w for x, w in level if x == r))
        lines.append(f"{r} fits several images ({images}); not written: add it by hand")
    return lines


# ---- registry, repositories and names ---------------------------------------------------------


def _registry_of(image: Wanted) -> str | None:
    parent = image.ref.rsplit("/", 1)[0]
    if not image.explicit_host or "/" not in parent:
        return None
    try:
        registry_prefix(parent)
    except ConfigError:
        return None
    return parent


def choose_registry(survey: Survey, pairs: list[Pair]) -> list[tuple[Recipe, str, Wanted, str]]:
    """One registry for every image (moltbuild pushes to one): the one most images name. An
    image outside it is reported, not written."""
    counts = Counter(filter(None, (_registry_of(w) for _, w, _ in pairs)))
    survey.registry = counts.most_common(1)[0][0] if counts else None
    kept = []
    for recipe, image, why in pairs:
        prefix = f"{survey.registry}/" if survey.registry else None
        if prefix and image.ref.startswith(prefix):
            kept.append((recipe, image.ref[len(prefix) :], image, why))
        elif survey.registry:
            survey.undecided.append(
                f"{image.ref} fits {recipe.path} but is not under {survey.registry}, the registry the other "
                "images name (moltbuild pushes every image to one); not written: add it by hand"
            )
        else:
            survey.undecided.append(
                f"{image.ref} fits {recipe.path} but its name gives no HOST/NAMESPACE registry "
                "(write the kustomization image as HOST/NAMESPACE/NAME); not written"
            )
    return kept


def _common_prefix(repositories: list[str]) -> tuple[str, ...]:
    words = [_tokens(r.rsplit("/", 1)[-1]) for r in repositories]  # the names, not the paths
    if len(words) < 2:
        return ()
    prefix = words[0]
    for other in words[1:]:
        n = 0
        while n < min(len(prefix), len(other)) and prefix[n] == other[n]:
            n += 1
        prefix = prefix[:n]
    return prefix


def name_images(items: list[tuple[Recipe, str, str | None, str]], pinned: list[str]) -> list[Choice]:
    """Each image named after its folder (api), less the prefix every `pinned` image name shares
    (moltbook-): moltbook-frontend/ gives frontend. Names stay unique."""
    prefix = _common_prefix(pinned)
    choices, used = [], set()
    for recipe, repository, image, why in items:
        words = _tokens(recipe.base_name) or ("image",)
        stripped = prefix and words[: len(prefix)] == prefix and len(words) > len(prefix)
        name = "-".join(words[len(prefix) :] if stripped else words)
        for candidate in ("-".join(words), "-".join(_tokens(recipe.path)) or "image"):
            if name in used:
                name = candidate
        base, n = name, 2
        while name in used:
            name, n = f"{base}-{n}", n + 1
        used.add(name)
        choices.append(Choice(name, recipe, repository, image, why))
    return choices


def survey_repository(runner: Runner, path: Path | None) -> Survey:
    root, in_git = locate(runner, path)
    how = "git: tracked and untracked files, ignored left out" if in_git else "no git: every file"
    survey = Survey(root=root, listing=how)
    survey.recipes = find_recipes(runner, root, in_git)
    if not survey.recipes:
        raise ConfigError(
            f"no Dockerfile under {root} ({how}; node_modules, vendor and build skipped); "
            "run init in the repository that holds them"
        )
    walk = _Walk(survey)
    for kustomization in find_kustomizations(root):
        survey.kustomizations.append(_rel(root, kustomization))
        walk.kustomization(kustomization)
    walk.attach()
    pairs, tied = match(survey)
    kept = choose_registry(survey, pairs)
    done = {recipe.path for recipe, _, _ in pairs} | tied
    items: list[tuple[Recipe, str, str | None, str]] = [(r, repo, w.ref, why) for r, repo, w, why in kept]
    for recipe in survey.recipes:
        if recipe.path not in done and recipe.base_name:
            items.append((recipe, recipe.base_name, None, "no kustomization image fits it"))
    survey.choices = name_images(sorted(items, key=lambda item: item[0].path), list(survey.wanted))
    matched = {w.ref for _, w, _ in pairs} | tied
    for image in survey.wanted.values():
        if image.ref not in matched:
            survey.undecided.append(f"{image.ref} ({image.source}): no Dockerfile here fits it; left out")
    return survey


def findings(survey: Survey) -> list[str]:
    """What was found and decided, in plain lines."""
    lines = [f"root: {survey.root} ({survey.listing})"]
    lines += [f"Dockerfile: {r.path}" for r in survey.recipes]
    if not survey.kustomizations:
        lines.append("kustomization: none under k8s/ (repositories come from the folders)")
    for rel in survey.kustomizations:
        count = sum(1 for w in survey.wanted.values() if w.source == rel)
        lines.append(f"kustomization: {rel} ({count} image(s))")
    for image in survey.wanted.values():
        runs = "; ".join(f"{w} (container {c})" for w, c in image.workloads) or "no Deployment or StatefulSet"
        lines.append(f"image: {image.ref}, run by {runs}")
    lines += [f"note: {note}" for note in survey.notes]
    return lines + decisions(survey)


def decisions(survey: Survey) -> list[str]:
    """Each match with its reason, then what init could not decide."""
    lines = []
    for choice in survey.choices:
        if choice.image:
            lines.append(f"match: {choice.name} = {choice.recipe.path} -> {choice.image} ({choice.why})")
    for choice in survey.choices:
        if not choice.image:
            lines.append(
                f"undecided: {choice.recipe.path}: no kustomization image fits it; image {choice.name}, "
                f"repository {choice.repository} taken from its folder: check it"
            )
    lines += [f"undecided: {line}" for line in survey.undecided]
    top = "k8s/kustomization.yml"
    pinned = [rel for rel in survey.kustomizations if any(w.source == rel for w in survey.wanted.values())]
    if pinned and top not in pinned:
        lines.append(f"note: invoke k8s.set-images edits {top} unless given --kustomization {pinned[0]}")
    return lines


# ---- what to write ----------------------------------------------------------------------------


def _toml_str(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\u{ord(m.group()):04x}", escaped) + '"'


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_str(key)


def image_block(choice: Choice) -> str:
    return (
        f"[tool.moltbuild.images.{_toml_key(choice.name)}]\n"
        f"repository = {_toml_str(choice.repository)}\n"
        f"context = {_toml_str(choice.recipe.context)}\n"
        f"dockerfile = {_toml_str(choice.recipe.dockerfile)}\n"
    )


def render_table(survey: Survey) -> str:
    if survey.registry:
        registry = f"registry = {_toml_str(survey.registry)}\n"
    else:
        registry = f'# registry = "HOST/NAMESPACE"  # none found; unset, moltbuild uses {DEFAULT_REGISTRY}\n'
    head = (
        "[tool.moltbuild]\n"
        "# Written by `moltbuild init` from the Dockerfiles and the kustomization it found. Build args,\n"
        "# platforms, target and smoke checks are not guessed: add them per image.\n" + registry
    )
    return "\n".join([head, *(image_block(c) for c in survey.choices)])


def _parse_toml(path: Path, text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc}); fix the syntax, then run init again") from None


def _existing_table(data: dict[str, Any]) -> dict[str, Any] | None:
    tool = data.get("tool")
    table = tool.get("moltbuild") if isinstance(tool, dict) else None
    return table if isinstance(table, dict) else None


def _would_add(survey: Survey, table: dict[str, Any]) -> list[str]:
    """With a [tool.moltbuild] already there: what init would add, a line each; nothing changes."""
    declared = set()
    for raw in (table.get("images") or {}).values():
        if isinstance(raw, dict):
            dockerfile = raw.get("dockerfile", "Dockerfile")
            declared.add((survey.root / str(raw.get("context", ".")) / str(dockerfile)).resolve())
    missing = [c for c in survey.choices if (survey.root / c.recipe.path).resolve() not in declared]
    blocks = [image_block(c).rstrip("\n") for c in missing]
    if survey.registry and not table.get("registry"):
        blocks.insert(0, f"registry = {_toml_str(survey.registry)}  # in [tool.moltbuild]")
    if not blocks:
        return ["pyproject.toml: [tool.moltbuild] already declares every Dockerfile found; unchanged"]
    lines = ["pyproject.toml already has [tool.moltbuild]; init changes nothing there. It would add:"]
    return lines + [f"    {line}" for block in blocks for line in block.splitlines()]


def plan_pyproject(survey: Survey) -> tuple[Change | None, list[str]]:
    path = survey.root / "pyproject.toml"
    old = read_text(path, "pyproject.toml") if path.is_file() else None
    table = _existing_table(_parse_toml(path, old)) if old is not None else None
    if table is not None:
        return None, _would_add(survey, table)
    if not survey.choices:
        raise ConfigError(
            "init could decide no image (see the undecided lines); add [tool.moltbuild.images.NAME] "
            f"to {path} by hand"
        )
    if old is None:
        new = render_table(survey)
    else:
        gap = "" if not old or old.endswith("\n\n") else "\n" if old.endswith("\n") else "\n\n"
        new = old + gap + render_table(survey)
    load_images(survey.root, _existing_table(_parse_toml(path, new)))  # what it writes must load
    names = ", ".join(c.name for c in survey.choices)
    what = f"{'added' if old is not None else 'created with'} [tool.moltbuild] (images {names})"
    return Change(path, old, new, what), []


def plan_tasks(root: Path) -> tuple[Change | None, list[str]]:
    path = root / "tasks.py"
    if not path.exists():
        return Change(path, None, TASKS_PY, "the invoke tasks (invoke --list)"), []
    if "moltbuild" in read_text(path, "tasks.py"):
        return None, ["tasks.py exists and loads moltbuild; unchanged"]
    return None, ["tasks.py exists without moltbuild's tasks; unchanged: add moltbuild.cli's collections"]


def plan_gitignore(root: Path) -> tuple[Change | None, list[str]]:
    path = root / ".gitignore"
    old = read_text(path, ".gitignore") if path.is_file() else None
    if old is not None and IGNORES_BUILD.intersection(line.strip() for line in old.splitlines()):
        return None, [".gitignore already ignores build/; unchanged"]
    new = (old or "") + ("\n" if old and not old.endswith("\n") else "") + "build/\n"
    return Change(path, old, new, "added build/ (reports and logs)"), []


def plan_changes(survey: Survey) -> tuple[list[Change], list[str]]:
    changes, lines = [], []
    for planned in (plan_pyproject(survey), plan_tasks(survey.root), plan_gitignore(survey.root)):
        change, said = planned
        lines += said
        if change:
            changes.append(change)
    return changes, lines


def diff(change: Change, root: Path) -> str:
    rel = _rel(root, change.path)
    old = (change.old or "").splitlines()
    before = "/dev/null" if change.old is None else f"a/{rel}"
    return "\n".join(difflib.unified_diff(old, change.new.splitlines(), before, f"b/{rel}", lineterm=""))


def apply(changes: list[Change], root: Path, *, dry_run: bool, say: Callable[[str], None]) -> None:
    if not changes:
        say("nothing to change: the repository already has everything init writes")
        return
    for change in changes:
        if dry_run:
            say(diff(change, root))
        else:
            write_atomic(change.path, change.new)
            say(f"wrote {_rel(root, change.path)}: {change.what}")
    if dry_run:
        say(f"dry run: nothing written ({len(changes)} file(s) would change)")
    else:
        say("next: invoke --list, then invoke build --dry-run")
