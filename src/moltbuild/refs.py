"""One image reference type: every module parses and renders references here.

Grammar after distribution/reference: `[HOST[:PORT]/]PATH[:TAG][@DIGEST]`; a first component
without `.` or `:` (and not `localhost`) is a path on Docker Hub, as docker reads it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace

from moltbuild.errors import ConfigError

DOCKER_HUB = "docker.io"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_HOST_RE = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$"
)
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
DIGEST_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$")


def names_a_host(component: str) -> bool:
    """Whether the first path component is a registry host (docker's rule), not a Docker Hub path."""
    return "." in component or ":" in component or component == "localhost" or component.startswith("[")


@dataclass(frozen=True)
class ImageRef:
    host: str  # registry host[:port], docker.io for Docker Hub
    repository: str  # path inside the registry, e.g. team/app or library/python
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str, origin: str = "image reference", *, default_tag: str | None = None) -> ImageRef:
        """Parse `text`; a grammar error names `origin` (a setting, flag or file:field)."""

        def bad(why: str) -> ConfigError:
            return ConfigError(f"{origin} {text!r} is not a valid image reference: {why}")

        raw = _checked_text(text, origin, bad)
        name, _, digest = raw.partition("@")
        if digest and not DIGEST_RE.match(digest):
            raise bad("the digest must look like sha256:<64 hex>")
        name, tag = _split_tag(name, bad)
        host, path = _split_host(name, bad)
        if tag is None and not digest:
            tag = default_tag
        return cls(host, path, tag, digest or None)

    @classmethod
    def repository_of(cls, text: str, origin: str) -> ImageRef:
        """A repository without tag or digest, e.g. MOLTBUILD_REGISTRY + image repository."""
        ref = cls.parse(text, origin)
        if ref.tag or ref.digest:
            raise ConfigError(f"{origin} {text!r} must name a repository without a tag or digest")
        return ref

    @property
    def name(self) -> str:
        """HOST/REPOSITORY, the form reports and kustomizations use."""
        return f"{self.host}/{self.repository}"

    @property
    def on_docker_hub(self) -> bool:
        return self.host == DOCKER_HUB

    @property
    def reference(self) -> str:
        """What the registry API takes after /manifests/: the digest when known, else the tag."""
        return self.digest or self.tag or "latest"

    def with_tag(self, tag: str) -> ImageRef:
        return replace(self, tag=tag, digest=None)

    def with_digest(self, digest: str) -> ImageRef:
        return replace(self, digest=digest)

    def bare(self) -> ImageRef:
        return replace(self, tag=None, digest=None)

    def moved_to(self, prefix: str) -> ImageRef:
        """The same path under another registry prefix (HOST[:PORT]/PREFIX), e.g. a mirror."""
        host, _, sub = prefix.rstrip("/").partition("/")
        return replace(self, host=host, repository=f"{sub}/{self.repository}" if sub else self.repository)

    def __str__(self) -> str:
        return self.name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


def is_loopback(host: str) -> bool:
    """`host` is HOST, HOST:PORT, [V6] or [V6]:PORT on this machine (127.0.0.0/8, ::1, localhost)."""
    if host.startswith("["):
        name = host[1:].split("]", 1)[0]
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def validate_tag(tag: str, origin: str = "--tag") -> str:
    if not TAG_RE.match(tag):
        raise ConfigError(
            f"{origin} {tag!r} is not a valid image tag: use letters, digits, '_', '.', '-' "
            "(not first), at most 128 characters"
        )
    return tag


def registry_prefix(value: str) -> ImageRef:
    """MOLTBUILD_REGISTRY as HOST[:PORT]/NAMESPACE; anything else is one clear line."""
    value = value.strip().rstrip("/")
    first, sep, _ = value.partition("/")
    if not sep or not names_a_host(first):
        raise ConfigError(f"MOLTBUILD_REGISTRY={value!r} needs a namespace: HOST[:PORT]/NAMESPACE")
    if first.startswith("["):
        # buildah, podman and kaniko reject an IPv6 literal in an image reference
        raise ConfigError(
            f"MOLTBUILD_REGISTRY={value!r}: the image tools cannot name a registry by an IPv6 address; "
            "use a host name for it (e.g. localhost:PORT, or an /etc/hosts entry)"
        )
    return ImageRef.repository_of(value, "MOLTBUILD_REGISTRY")


def _checked_text(text: str, origin: str, bad) -> str:
    raw = text.strip()
    userinfo, at, rest = raw.partition("@")
    if at and "/" not in userinfo and not DIGEST_RE.match(rest.split("/", 1)[0]):
        # USER:PASSWORD@HOST/...: never echoed, the value holds a secret
        raise ConfigError(
            f"{origin} holds credentials (USER:PASSWORD@HOST); remove them: credentials belong in "
            "REGISTRY_USERNAME/REGISTRY_PASSWORD or GITHUB_TOKEN"
        )
    if not raw or any(c.isspace() for c in raw):
        raise bad("it is empty or contains spaces")
    if "://" in raw:
        raise bad("drop the scheme (no http:// or https://)")
    return raw


def _split_tag(name: str, bad) -> tuple[str, str | None]:
    last = name.rsplit("/", 1)[-1]
    if ":" not in last or last.startswith("["):
        return name, None
    name, tag = name.rsplit(":", 1)
    if not TAG_RE.match(tag):
        raise bad(f"tag {tag!r} may use letters, digits, '_', '.', '-' (not first), 128 at most")
    return name, tag


def _split_host(name: str, bad) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if sep and names_a_host(first):
        host, path = first, rest
        if not _HOST_RE.match(host):
            raise bad(f"registry host {host!r} is not HOST[:PORT]")
        port = (
            host.rsplit(":", 1)[1] if host.count(":") == 1 or (host.startswith("[") and "]:" in host) else ""
        )
        if port and not 0 < int(port) < 65536:
            raise bad(f"port {port} of {host!r} is not between 1 and 65535")
    else:
        host, path = DOCKER_HUB, name
    if host == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if not _PATH_RE.match(path):
        raise bad(f"repository {path!r} must be lowercase letters, digits and . _ - separated by /")
    return host, path
