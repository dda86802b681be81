"""What a setting is: the Secret value type, KeySpec (help, default, kind), the one vocabulary
for on/off and choice values, and every key the tool reads, declared once in KEYS."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from moltbuild.errors import ConfigError
from moltbuild.project import DEFAULT_REGISTRY

MASK = "****"
BACKENDS = ("auto", "docker", "buildah", "kaniko")
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")
ON_OFF = "1/true/yes/on or 0/false/no/off"


class Secret:
    """A value whose str/repr/format never show it; call reveal() at the one place it is used."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return MASK if self._value else ""

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class KeySpec:
    key: str
    help: str
    pyproject: str | None = None  # key under [tool.moltbuild]
    default: str = ""
    secret: bool = False
    choices: tuple[str, ...] = ()  # an enum: read with Settings.choice(), any case
    flag: bool = False  # on/off: read with Settings.flag(), by the one truthiness rule
    platform: bool = False  # on/off set by a CI platform: any value but a false word is on

    def parse(self, value: str, source: str) -> Any:
        """The one reading of a raw value: a bool for on/off keys, the canonical choice for an
        enum, else the text. Anything else is a one-line ConfigError naming the key."""
        if self.platform:
            return platform_on(value)
        if self.flag:
            return truthy(value, self.key, source)
        if self.choices:
            return choose(value, self.key, self.choices, source)
        return value


def _where(source: str) -> str:
    return f" (from {source})" if source else ""


def truthy(value: str | None, key: str, source: str = "") -> bool:
    """The one truthiness rule: 1/true/yes/on or 0/false/no/off, any case; else a ConfigError."""
    word = (value or "").strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigError(f"{key}={value!r}{_where(source)} must be one of {ON_OFF}")


def platform_on(value: str | None) -> bool:
    """A variable a CI platform sets (CI, GITHUB_ACTIONS): unset or a false word is off, any other
    value on (Woodpecker sets CI=woodpecker), so no platform's value is an error."""
    return (value or "").strip().lower() not in FALSE_WORDS


def choose(value: str | None, key: str, choices: tuple[str, ...], source: str = "") -> str:
    """One of `choices`, any case; where the choices are on/off (auto|on|off) the on/off words
    count too (yes = on). Anything else is a ConfigError naming the key and the choices."""
    word = (value or "").strip().lower()
    if word in choices:
        return word
    if {"on", "off"} <= set(choices) and word in TRUE_WORDS + FALSE_WORDS[:-1]:
        return "on" if word in TRUE_WORDS else "off"
    raise ConfigError(f"{key}={value!r}{_where(source)} must be one of {', '.join(choices)}")


def ci_platform(values: Mapping[str, str]) -> str | None:
    """The one answer to "are we in CI": "github-actions", "ci" or None, from a mapping of
    variables (the process environment, or the loaded settings' raw values)."""
    if platform_on(values.get("GITHUB_ACTIONS")):
        return "github-actions"
    return "ci" if platform_on(values.get("CI")) else None


KEYS: dict[str, KeySpec] = {
    spec.key: spec
    for spec in (
        KeySpec("GITHUB_TOKEN", "token for ghcr.io (scope write:packages to push)", secret=True),
        KeySpec("GITHUB_USERNAME", "GitHub user that owns GITHUB_TOKEN (ghcr.io does not check it)"),
        KeySpec(
            "GITHUB_ACTOR", "set by GitHub Actions: the ghcr.io username there when GITHUB_USERNAME is unset"
        ),
        KeySpec("CI", "set by CI platforms: any value but 0/false/no/off means a CI run", platform=True),
        KeySpec("GITHUB_ACTIONS", "set by GitHub Actions (true): a run there", platform=True),
        KeySpec("REGISTRY_USERNAME", "user for any other registry"),
        KeySpec("REGISTRY_PASSWORD", "password or token for REGISTRY_USERNAME", secret=True),
        KeySpec(
            "MOLTBUILD_CREDENTIAL_HOSTS",
            "comma list of other registry hosts that may receive REGISTRY_USERNAME/PASSWORD (default: "
            "only the host of MOLTBUILD_REGISTRY)",
            "credential_hosts",
        ),
        KeySpec("MOLTBUILD_REGISTRY", "registry and namespace images go to", "registry", DEFAULT_REGISTRY),
        KeySpec("MOLTBUILD_BACKEND", "auto|docker|buildah|kaniko", "backend", "auto", choices=BACKENDS),
        KeySpec(
            "MOLTBUILD_BASE_MIRROR", "HOST[:PORT]/PREFIX Docker Hub bases are pulled through", "base_mirror"
        ),
        KeySpec(
            "MOLTBUILD_INSECURE_REGISTRIES",
            "comma list of host:port allowed over plain HTTP",
            "insecure_registries",
        ),
        KeySpec("MOLTBUILD_REGISTRY_CA", "CA bundle (PEM) for a private registry", "registry_ca"),
        KeySpec(
            "MOLTBUILD_STORAGE_ROOT", "buildah graphroot; the storage probe tests this path", "storage_root"
        ),
        KeySpec(
            "MOLTBUILD_IMAGE_FORMAT",
            "oci|docker: buildah's image format; oci is reproducible (same commit, same digest on any "
            "machine), docker keeps HEALTHCHECK in the image but records build-host details",
            "image_format",
            "oci",
            choices=("oci", "docker"),
        ),
        KeySpec(
            "MOLTBUILD_KEEP_IMAGES",
            "1 keeps superseded builds and unused intermediate images (default: a good run prunes "
            "the ones this tool created)",
            "keep_images",
            flag=True,
        ),
        KeySpec(
            "MOLTBUILD_REGISTRY_CACHE",
            "0 turns off the layer cache in the registry (REPO/cache) that a build --push reads and "
            "writes (like --no-cache, which also skips the local layer cache)",
            "registry_cache",
            "1",
            flag=True,
        ),
        KeySpec(
            "MOLTBUILD_SMOKE",
            "0/off skips the release check (start the image before the push), like --no-smoke; a push "
            "without a container runtime is refused unless it is off",
            "smoke",
            "1",
            flag=True,
        ),
        KeySpec(
            "MOLTBUILD_VERBOSE",
            "1 prints every command and all tool output (always in build/logs/NAME.log); --verbose",
            "verbose",
            flag=True,
        ),
        KeySpec(
            "MOLTBUILD_TRACEBACK",
            "1 shows the Python traceback of an unexpected error (for a bug report) instead of one line",
            flag=True,
        ),
        KeySpec("MOLTBUILD_KUBE_CONTEXT", "kubeconfig context for kaniko (default: current)", "kube_context"),
        KeySpec("MOLTBUILD_KUBE_NAMESPACE", "namespace kaniko Jobs run in", "kube_namespace", "moltbuild"),
        KeySpec(
            "MOLTBUILD_KANIKO_IMAGE",
            "kaniko executor image, pinned by digest",
            "kaniko_image",
            "ghcr.io/osscontainertools/kaniko:v1.28.2"
            "@sha256:4ea0e7301e3f6806de15150e4982c73018351e28c1dca6947bd3b4afb5ae3c60",
        ),
        KeySpec(
            "MOLTBUILD_KANIKO_HELPER_IMAGE",
            "image of the Job's init container that receives the context (needs sh and tar)",
            "kaniko_helper_image",
            "docker.io/library/busybox:1.36.1"
            "@sha256:73aaf090f3d85aa34ee199857f03fa3a95c8ede2ffd4cc2cdb5b94e566b11662",
        ),
        KeySpec(
            "MOLTBUILD_GITHUB_REPO",
            "owner/name for gh.dispatch and gh.runs (default: the origin remote)",
            "github_repo",
        ),
        KeySpec(
            "MOLTBUILD_GITHUB_API",
            "GitHub REST API base URL (GitHub Enterprise)",
            "github_api",
            "https://api.github.com",
        ),
        KeySpec(
            "MOLTBUILD_GITHUB_MAX_WAIT",
            "seconds a GitHub request may wait out rate limits before it fails",
            "github_max_wait",
            "300",
        ),
        KeySpec(
            "MOLTBUILD_IDLE_TIMEOUT",
            "seconds a push or pull may move no byte, or a registry request wait for an answer "
            "(a registry operation: 3x)",
            "idle_timeout",
            "60",
        ),
        KeySpec("MOLTBUILD_KANIKO_TIMEOUT", "seconds a kaniko Job may take", "kaniko_timeout", "1800"),
        KeySpec(
            "MOLTBUILD_ATTEST",
            "SBOM + SLSA provenance (+ signature) on every pushed image: auto (when syft and cosign "
            "are installed), on (required), off",
            "attest",
            "auto",
            choices=("auto", "on", "off"),
        ),
        KeySpec(
            "MOLTBUILD_TOOL_CACHE",
            "a folder of Go-built tools (kustomize, syft, cosign) shared between runs or machines: "
            "`invoke setup` uses a binary from it only when its sha256 is the lock's",
        ),
        KeySpec(
            "MOLTBUILD_TOOL_DIR",
            "where `invoke setup` puts the Go-built tools (default /usr/local/bin for root, else "
            "~/.local/bin); put it on PATH",
        ),
        KeySpec(
            "MOLTBUILD_SBOM_FORMAT",
            "SBOM format",
            "sbom_format",
            "spdx-json",
            choices=("spdx-json", "cyclonedx-json"),
        ),
        KeySpec("MOLTBUILD_SIGNING_KEY", "cosign private key file that signs pushed images and attestations"),
        KeySpec("MOLTBUILD_SIGNING_PASSWORD", "password of MOLTBUILD_SIGNING_KEY", secret=True),
        KeySpec(
            "COSIGN_PASSWORD",
            "cosign's own variable: the key's password when MOLTBUILD_SIGNING_PASSWORD is unset",
            secret=True,
        ),
        KeySpec(
            "MOLTBUILD_VERIFY_KEY", "cosign public key `invoke verify` checks signatures with", "verify_key"
        ),
        KeySpec(
            "MOLTBUILD_VERIFY_IDENTITY",
            "keyless: the signer identity `invoke verify` expects (a workflow URL regexp, e.g. "
            "^https://github.com/ORG/REPO/.github/workflows/)",
            "verify_identity",
        ),
        KeySpec(
            "MOLTBUILD_VERIFY_ISSUER",
            "keyless: the OIDC issuer `invoke verify` expects",
            "verify_issuer",
            "https://token.actions.githubusercontent.com",
        ),
        KeySpec(
            "MOLTBUILD_KANIKO_KEEP", "1 keeps finished kaniko Jobs (debugging)", "kaniko_keep", flag=True
        ),
        KeySpec(
            "MOLTBUILD_DEV_NAMESPACE",
            "namespace `invoke dev --cluster` deploys into (created if missing; default dev-USER; never "
            "the project's MOLTBUILD_KUBE_NAMESPACE)",
        ),
        KeySpec(
            "MOLTBUILD_DEV_DEBOUNCE",
            "seconds `invoke dev` waits for more changes before it acts on a batch (changes during a "
            "build always make the next one)",
            default="0.2",
        ),
    )
}
