"""kustomize's own rules for an `images:` entry (api/internal/image, api/filters/imagetag, v5):
which container images its `name` matches (exactly, with any tag and digest: `nginx` is not
`docker.io/library/nginx`; the name is used as a regular expression, unescaped, as kustomize
does), and what it rewrites them to (a new tag, a digest or both replace the old tag and digest)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_TAG = "[a-zA-Z0-9_.{}-]*"  # what kustomize lets a tag or digest hold when it matches a name


def split(image: str) -> tuple[str, str, str]:
    """kustomize's image.Split: (name, tag, digest). A `:` before the first `/` is a port."""
    slash = image.find("/")
    offset = slash if slash > 0 else 0
    at, colon = image.find("@", offset), image.find(":", offset)
    if at < 0 and colon < 0:
        return image, "", ""
    if at >= 0 and (colon < 0 or at < colon):
        return image[:at], "", image[at + 1 :]
    if at >= 0:
        return image[:colon], image[colon + 1 : at], image[at + 1 :]
    return image[:colon], image[colon + 1 :], ""


def _pattern(name: str) -> re.Pattern[str] | None:
    try:  # as kustomize builds it: the name is not escaped (`ngin.` matches `nginx`); re caches it
        return re.compile(f"^{name}(:{_TAG})?(@sha256:{_TAG})?\\Z")
    except re.error:
        return None


def image_matches(image: str, name: str) -> bool:
    """kustomize's image.IsImageMatched: `image` is `name` with at most a tag and a digest."""
    pattern = _pattern(name)
    return bool(pattern and pattern.match(image))


@dataclass(frozen=True)
class ImageEntry:
    """One entry of a level's `images:` list."""

    file: Path  # the kustomization (or component) holding it
    index: int  # its place in that file's `images:`
    name: str
    new_name: str = ""
    new_tag: str = ""
    digest: str = ""
    tag_suffix: str = ""

    @property
    def where(self) -> str:
        return f"{self.file}: images[{self.index}]"

    def matches(self, image: str) -> bool:
        return image_matches(image, self.name)

    def apply(self, image: str) -> str:
        """`image` as this entry rewrites it (kustomize's imageTagUpdater)."""
        name, tag, digest = split(image)
        name = self.new_name or name
        if self.new_tag or self.digest:
            tag, digest = self.new_tag, self.digest
        elif self.tag_suffix:
            tag, digest = tag + self.tag_suffix, ""
        return name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
