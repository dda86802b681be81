"""Which Dockerfile builds which kustomization image, and what to call each: fits scored by the
words of folders, image, workload and container names, decided best tier first (a tie is
reported, never broken by a guess); one registry for all; image names without the prefix every
pinned image shares."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from moltbuild.adopt.recipes import Recipe, tokens
from moltbuild.errors import ConfigError
from moltbuild.refs import registry_prefix


@dataclass
class Wanted:
    """An image the kustomization pins, and the workloads that run it."""

    ref: str  # HOST/REPOSITORY, no tag
    source: str  # the kustomization naming it
    explicit_host: bool  # the name starts with a registry host (not a Docker Hub short name)
    workloads: list[tuple[str, str]] = field(default_factory=list)  # (workload label, container)

    @property
    def short(self) -> str:
        return self.ref.rsplit("/", 1)[-1]


Pair = tuple[Recipe, Wanted, str]  # a Dockerfile, the image it builds, why
Item = tuple[Recipe, str, str | None, str]  # a Dockerfile, its repository, the image it builds, why


@dataclass(frozen=True)
class Choice:
    """One image for the table."""

    name: str
    recipe: Recipe
    repository: str
    image: str | None  # the kustomization image it builds; None: repository from the folder
    why: str


@dataclass
class Matched:
    pairs: list[Pair] = field(default_factory=list)
    tied: set[str] = field(default_factory=set)  # Dockerfile paths and image names a tie left open
    undecided: list[str] = field(default_factory=list)  # the ties, a line each

    @property
    def decided(self) -> set[str]:
        """The Dockerfile paths and image names paired."""
        return {recipe.path for recipe, _, _ in self.pairs} | {image.ref for _, image, _ in self.pairs}


def _fit(label: str, name: str) -> int:
    """2: the same words (api, api); 1: one ends or starts the other (api, shop-api); 0."""
    a, b = tokens(label), tokens(name)
    if not a or not b:
        return 0
    if a == b:
        return 2
    short, long = sorted((a, b), key=len)
    return 1 if long[: len(short)] == short or long[-len(short) :] == short else 0


def _by_workload(label: str, wanted: Wanted) -> tuple[int, str]:
    best = (0, "")
    for workload, container in wanted.workloads:
        for kind, name in (("container", container), ("workload", workload.rsplit(" ", 1)[-1])):
            fit = _fit(label, name)
            if fit:
                best = max(best, (fit * 2 - 1, f"{kind} {name} runs it: {workload}"))
    return best


def score(recipe: Recipe, wanted: Wanted) -> tuple[int, str]:
    """How well a Dockerfile fits an image: 4 its folder is the image's name, 3 a workload or
    container running the image has the folder's name, 2 and 1 the same by a word; 0 no fit."""
    best = (0, "")
    for label in filter(None, (recipe.folder, recipe.variant)):
        fit = _fit(label, wanted.short)
        if fit:
            how = "is the image's name" if fit == 2 else f"is part of the image's name {wanted.short}"
            best = max(best, (fit * 2, f"{label} {how}"))
        best = max(best, _by_workload(label, wanted))
    return best


def _partners(level: list[tuple[str, str]], key: str, side: int) -> str:
    return ", ".join(sorted(pair[1 - side] for pair in level if pair[side] == key))


def _crowded(counts: Counter[str]) -> list[str]:
    return sorted(key for key, n in counts.items() if n > 1)


def _ties(level: list[tuple[str, str]], per_r: Counter[str], per_w: Counter[str]) -> list[str]:
    lines = [
        f"{w}: two candidates, {_partners(level, w, 1)}; none written: add the right one by hand"
        for w in _crowded(per_w)
    ]
    return lines + [
        f"{r} fits several images ({_partners(level, r, 0)}); not written: add it by hand"
        for r in _crowded(per_r)
    ]


Fits = dict[tuple[str, str], tuple[int, str]]  # (Dockerfile path, image) -> (tier, why)


def _level(fits: Fits, tier: int, taken_r: set[str], taken_w: set[str]) -> list[tuple[str, str]]:
    """The (Dockerfile, image) pairs fitting at `tier` that an earlier tier left open."""
    return [(r, w) for (r, w), (t, _) in fits.items() if t == tier and r not in taken_r and w not in taken_w]


def _decide(level: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[str]]:
    """The pairs of a tier whose Dockerfile and image fit nothing else there, and the ties."""
    per_r, per_w = Counter(r for r, _ in level), Counter(w for _, w in level)
    return [(r, w) for r, w in level if per_r[r] == per_w[w] == 1], _ties(level, per_r, per_w)


def match(recipes: list[Recipe], wanted: dict[str, Wanted]) -> Matched:
    """Pairs decided tier by tier (best fits first); a tie is reported, never broken by a guess."""
    fits = {(r.path, w.ref): score(r, w) for r in recipes for w in wanted.values()}
    by_path = {r.path: r for r in recipes}
    matched, taken_r, taken_w = Matched(), set(), set()
    for tier in (4, 3, 2, 1):
        level = _level(fits, tier, taken_r, taken_w)
        alone, ties = _decide(level)
        matched.pairs += [(by_path[r], wanted[w], fits[r, w][1]) for r, w in alone]
        matched.undecided += ties
        taken_r.update(r for r, _ in level)
        taken_w.update(w for _, w in level)
    matched.tied = (taken_r | taken_w) - matched.decided
    return matched


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


def _outside(image: Wanted, recipe: Recipe, registry: str | None) -> str:
    if registry:
        return (
            f"{image.ref} fits {recipe.path} but is not under {registry}, the registry the other "
            "images name (moltbuild pushes every image to one); not written: add it by hand"
        )
    return (
        f"{image.ref} fits {recipe.path} but its name gives no HOST/NAMESPACE registry "
        "(write the kustomization image as HOST/NAMESPACE/NAME); not written"
    )


def choose_registry(pairs: list[Pair]) -> tuple[str | None, list[Item], list[str]]:
    """One registry for every image (moltbuild pushes to one): the one most images name. Returns
    it, the pairs under it with their repositories, and a line for each image outside it."""
    counts = Counter(filter(None, (_registry_of(w) for _, w, _ in pairs)))
    registry = counts.most_common(1)[0][0] if counts else None
    prefix = f"{registry}/" if registry else None
    kept: list[Item] = []
    outside = []
    for recipe, image, why in pairs:
        if prefix and image.ref.startswith(prefix):
            kept.append((recipe, image.ref[len(prefix) :], image.ref, why))
        else:
            outside.append(_outside(image, recipe, registry))
    return registry, kept, outside


def _common_prefix(repositories: list[str]) -> tuple[str, ...]:
    words = [tokens(r.rsplit("/", 1)[-1]) for r in repositories]  # the names, not the paths
    if len(words) < 2:
        return ()
    prefix = words[0]
    for other in words[1:]:
        n = 0
        while n < min(len(prefix), len(other)) and prefix[n] == other[n]:
            n += 1
        prefix = prefix[:n]
    return prefix


def _unique(name: str, recipe: Recipe, used: set[str]) -> str:
    """`name`, else the folder's full name, else the path's words, else NAME-2, NAME-3..."""
    for candidate in (
        "-".join(tokens(recipe.base_name) or ("image",)),
        "-".join(tokens(recipe.path)) or "image",
    ):
        if name in used:
            name = candidate
    base, n = name, 2
    while name in used:
        name, n = f"{base}-{n}", n + 1
    return name


def name_images(items: list[Item], pinned: list[str]) -> list[Choice]:
    """Each image named after its folder (api), less the prefix every `pinned` image name shares
    (shop-): shop-web/ gives web. Names stay unique."""
    prefix = _common_prefix(pinned)
    choices, used = [], set()
    for recipe, repository, image, why in items:
        words = tokens(recipe.base_name) or ("image",)
        stripped = prefix and words[: len(prefix)] == prefix and len(words) > len(prefix)
        name = _unique("-".join(words[len(prefix) :] if stripped else words), recipe, used)
        used.add(name)
        choices.append(Choice(name, recipe, repository, image, why))
    return choices
