"""What `k8s.set-images` writes where: each pin aimed, through the deployment model, at the
`images:` entry of the edited kustomization that kustomize applies to the containers that run the
image; or refused in one line naming the file whose entry stands in the way (a base that renames
the image first, a later duplicate that overrides the pin, no container that runs it)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from moltbuild.errors import ConfigError
from moltbuild.k8s.deployment import Container, Deployment, Level
from moltbuild.k8s.images import ImageEntry, image_matches, split
from moltbuild.refs import ImageRef

NEW = -1  # Pin.entry: add an entry


@dataclass(frozen=True)
class Pin:
    name: str  # the image name the manifests use (the entry's `name`)
    new_name: str
    new_tag: str
    digest: str | None
    # the `images:` entry to edit: its index, NEW, or None: the first entry named exactly `name`,
    # else a new one
    entry: int | None = None

    @property
    def values(self) -> dict[str, str | None]:
        return {"newName": self.new_name, "newTag": self.new_tag, "digest": self.digest}

    @property
    def image(self) -> str:
        """The image kustomize renders for a container this pin applies to."""
        return f"{self.new_name}:{self.new_tag}" + (f"@{self.digest}" if self.digest else "")

    def line(self) -> str:
        ref = ImageRef.parse(self.new_name, "newName").with_tag(self.new_tag)
        return f"{self.name} -> {ref.with_digest(self.digest) if self.digest else ref}"


def planned(model: Deployment, pins: list[Pin]) -> list[Pin]:
    """`pins`, each with the entry of the top kustomization to edit so that kustomize renders the
    pinned image for every container the pin's name matches there."""
    top = model.levels[-1]
    return [_aim(model, top, pin) for pin in pins]


def _aim(model: Deployment, top: Level, pin: Pin) -> Pin:
    arriving = [c.before(top.file) for c in model.containers]
    targets = [image for image in arriving if image_matches(image, pin.name)]
    if not targets:
        _no_target(model, top, pin)
        return pin
    index = _working(top, pin, targets)
    if index is not None:
        return replace(pin, entry=index)
    first = next((e.index for e in top.images if e.name == pin.name), NEW)
    made, by = _through(top, first, pin, targets[0])
    raise ConfigError(
        f"{top.file}: images[{by.index}] (name: {by.name}) rewrites {pin.name} too, so kustomize would "
        f"render {made}, not {pin.image}, wherever the pin is written; remove or merge that entry"
    )


def _working(top: Level, pin: Pin, targets: list[str]) -> int | None:
    """The entry to write the pin in for kustomize to render it for all `targets`: the entries named
    exactly as the pin, the last first (the one kustomize applies last), then a new one."""
    candidates = [e.index for e in reversed(top.images) if e.name == pin.name] + [NEW]
    return next(
        (i for i in candidates if all(_through(top, i, pin, image)[0] == pin.image for image in targets)),
        None,
    )


def _through(top: Level, index: int, pin: Pin, image: str) -> tuple[str, ImageEntry]:
    """`image` after the top level's entries with the pin written at `index`; and the last entry
    that changed it."""
    pinned = ImageEntry(top.file, index, pin.name, pin.new_name, pin.new_tag, pin.digest or "")
    entries = list(top.images)
    if index == NEW:
        pinned = replace(pinned, index=len(entries))
        entries.append(pinned)
    else:
        entries[index] = pinned
    last = pinned
    for entry in entries:
        if entry.matches(image):
            image, last = entry.apply(image), entry
    return image, last


def _no_target(model: Deployment, top: Level, pin: Pin) -> None:
    """No container reaches the top level under the pin's name: name the entry that renamed it
    on the way, or say that nothing runs it. A remote resource may run it: a new entry then."""
    for container in model.containers:
        renamed = _renamed_by(container, top, pin.name)
        if renamed is not None:
            entry, before, after = renamed
            raise ConfigError(
                f"{entry.file}: images[{entry.index}] renames {before} to {after} before {top.file} "
                f"applies its images:, so a pin for {pin.name} there would change nothing; pin "
                f"{entry.file} (--kustomization) or drop its newName"
            )
    if model.remote:
        return
    running = sorted({split(c.before(top.file))[0] for c in model.containers})
    shown = ", ".join(running[:4]) or "none"
    raise ConfigError(
        f"{top.file}: no container runs {pin.name} (kustomize matches an images: name exactly; the "
        f"containers run {shown}); set the image's manifest_name in [tool.moltbuild.images] to the "
        "name the manifest uses, or leave the image out with --only"
    )


def _renamed_by(container: Container, top: Level, name: str) -> tuple[ImageEntry, str, str] | None:
    image = container.written
    for entry, made in container.steps:
        if entry.file == top.file:
            break
        if image_matches(image, name) and not image_matches(made, name):
            return entry, image, made
        image = made
    return None
