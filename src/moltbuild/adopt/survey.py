"""What init found and decided: the Survey of a repository (its Dockerfiles, the kustomization's
images and the workloads running them, the chosen images, what stayed undecided) and the plain
lines that say it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from moltbuild.adopt.compose import compose_recipes
from moltbuild.adopt.deployment import Deployment, Workload, read_deployment
from moltbuild.adopt.matching import Choice, Item, Matched, Wanted, choose_registry, match, name_images
from moltbuild.adopt.recipes import Recipe, find_recipes, locate
from moltbuild.errors import ConfigError
from moltbuild.refs import ImageRef, names_a_host
from moltbuild.system.processes import Runner
from moltbuild.system.tables import render_table

TOP_KUSTOMIZATION = "k8s/kustomization.yml"  # the one k8s.set-images edits by default


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


def survey_repository(runner: Runner, path: Path | None) -> Survey:
    """Find, match and name; raise only when there is nothing to adopt or a file cannot be read."""
    root, in_git = locate(runner, path)
    how = "git: tracked and untracked files, ignored left out" if in_git else "no git: every file"
    found, composes, notes = find_recipes(runner, root, in_git)
    composed = compose_recipes(root, composes, notes)  # compose first: it says context, args, target
    built = {recipe.path for recipe in composed}
    recipes = composed + [recipe for recipe in found if recipe.path not in built]
    survey = Survey(root=root, listing=how, recipes=recipes, notes=notes)
    if not survey.recipes:
        raise ConfigError(_nothing_to_adopt(root, how, notes))
    deployment = read_deployment(root)
    survey.kustomizations = deployment.kustomizations
    survey.notes += deployment.notes
    survey.wanted = wanted_images(deployment, survey.notes)
    matched = match(survey.recipes, survey.wanted)
    survey.undecided += matched.undecided
    survey.registry, kept, outside = choose_registry(matched.pairs)
    survey.undecided += outside
    survey.choices = name_images(_items(survey.recipes, kept, matched), list(survey.wanted))
    survey.undecided += [
        f"{image.ref} ({image.source}): no Dockerfile here fits it; left out"
        for image in survey.wanted.values()
        if image.ref not in matched.decided | matched.tied
    ]
    return survey


def _nothing_to_adopt(root: Path, how: str, notes: list[str]) -> str:
    where = f"under {root} ({how}; node_modules, vendor and build skipped)"
    if notes:  # e.g. a compose service init could not use: say why, not only that there is nothing
        return f"{notes[0]} (no Dockerfile {where})"
    return (
        f"no Dockerfile {where}; run init in the repository that holds them (init also reads "
        "Containerfile and compose files' build:)"
    )


def _items(recipes: list[Recipe], kept: list[Item], matched: Matched) -> list[Item]:
    """The paired Dockerfiles, then those no image fits (repository from the folder), by path."""
    done = matched.decided | matched.tied
    items = kept + [
        (recipe, recipe.repository or recipe.base_name, None, "no kustomization image fits it")
        for recipe in recipes
        if recipe.path not in done and recipe.base_name
    ]
    return sorted(items, key=lambda item: item[0].path)


def _bare(image: str, where: str) -> str | None:
    try:
        return ImageRef.parse(image, where).bare().name
    except ConfigError:
        return None


def wanted_images(deployment: Deployment, notes: list[str]) -> dict[str, Wanted]:
    """The kustomizations' images by name (HOST/REPOSITORY), each with the workloads running it;
    an entry whose name is no image reference goes to `notes`."""
    wanted: dict[str, Wanted] = {}
    for entry in deployment.images:
        try:
            ref = ImageRef.parse(entry.name, f"{entry.source} images[{entry.index}].name").bare().name
        except ConfigError as exc:
            notes.append(f"{exc.message}: skipped")
            continue
        explicit = "/" in entry.name and names_a_host(entry.name.split("/", 1)[0])
        wanted.setdefault(ref, Wanted(ref, entry.source, explicit))
    _attach(deployment.workloads, wanted)
    return wanted


def _attach(workloads: list[Workload], wanted: dict[str, Wanted]) -> None:
    """Each workload container to the kustomization image it runs (kustomize matches names)."""
    for workload in workloads:
        for container in workload.containers:
            ref = _bare(container.image, f"{workload.label} image")
            if ref in wanted:
                wanted[ref].workloads.append((workload.label, container.name))


# ---- what it says -----------------------------------------------------------------------------


def findings(survey: Survey) -> list[str]:
    """What was found and decided, in plain lines."""
    lines = [f"root: {survey.root} ({survey.listing})"]
    lines += [f"Dockerfile: {r.path}" + (f" (from {r.origin})" if r.origin else "") for r in survey.recipes]
    if not survey.kustomizations:
        lines.append("kustomization: none under k8s/ (repositories come from the folders)")
    for rel in survey.kustomizations:
        count = sum(1 for w in survey.wanted.values() if w.source == rel)
        lines.append(f"kustomization: {rel} ({count} image(s))")
    for image in survey.wanted.values():
        runs = "; ".join(f"{w} (container {c})" for w, c in image.workloads) or "no workload"
        lines.append(f"image: {image.ref}, run by {runs}")
    lines += [f"note: {note}" for note in survey.notes]
    return lines + decisions(survey)


def choices_table(choices: list[Choice]) -> list[str]:
    """The images init would declare, a row each."""
    if not choices:
        return []
    rows = [(c.name, c.recipe.path, c.repository, c.image or "none: from its folder") for c in choices]
    return [
        "images:",
        *render_table(("image", "Dockerfile", "repository", "kustomization image"), rows).splitlines(),
    ]


def decisions(survey: Survey) -> list[str]:
    """The images chosen, each match with its reason, then what init could not decide."""
    lines = choices_table(survey.choices)
    decided = [c for c in survey.choices if c.image]
    lines += [f"match: {c.name} = {c.recipe.path} -> {c.image} ({c.why})" for c in decided]
    lines += [
        f"undecided: {c.recipe.path}: no kustomization image fits it; image {c.name}, "
        f"repository {c.repository} taken from its folder: check it"
        for c in survey.choices
        if not c.image
    ]
    lines += [f"undecided: {line}" for line in survey.undecided]
    return lines + _set_images_note(survey)


def _set_images_note(survey: Survey) -> list[str]:
    sources = {w.source for w in survey.wanted.values()}
    pinned = [rel for rel in survey.kustomizations if rel in sources]
    if pinned and TOP_KUSTOMIZATION not in pinned:
        return [
            f"note: invoke k8s.set-images edits {TOP_KUSTOMIZATION} unless given --kustomization {pinned[0]}"
        ]
    return []
