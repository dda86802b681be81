"""Settings: one function owns precedence and returns every value with its source.

Precedence, highest first: CLI flag > process env > .env.local > .env > [tool.moltbuild] > default.
"""

from __future__ import annotations

import difflib
import io
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dotenv.parser import parse_stream

from moltbuild.errors import ConfigError
from moltbuild.project import DEFAULT_REGISTRY, read_tool_table
from moltbuild.refs import is_loopback

MASK = "****"
BACKENDS = ("auto", "docker", "buildah", "kaniko")


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
    choices: tuple[str, ...] = ()
    flag: bool = False  # on/off: read with Settings.flag(), checked by the one truthiness rule


TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")


def truthy(value: str | None, key: str, source: str = "") -> bool:
    """The one truthiness rule: 1/true/yes/on or 0/false/no/off, any case; else a ConfigError."""
    word = (value or "").strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    where = f" (from {source})" if source else ""
    raise ConfigError(f"{key}={value!r}{where} must be one of 1/true/yes/on or 0/false/no/off")


KEYS: dict[str, KeySpec] = {
    spec.key: spec
    for spec in (
        KeySpec("GITHUB_TOKEN", "token for ghcr.io (scope write:packages to push)", secret=True),
        KeySpec("GITHUB_USERNAME", "GitHub user that owns GITHUB_TOKEN (ghcr.io does not check it)"),
        KeySpec(
            "GITHUB_ACTOR", "set by GitHub Actions: the ghcr.io username there when GITHUB_USERNAME is unset"
        ),
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
        KeySpec("MOLTBUILD_KUBE_NAMESPACE", "namespace kaniko Jobs run in", "kube_namespace", "moltbook"),
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
            "MOLTBUILD_SBOM_FORMAT",
            "SBOM format",
            "sbom_format",
            "spdx-json",
            choices=("spdx-json", "cyclonedx-json"),
        ),
        KeySpec("MOLTBUILD_SIGNING_KEY", "cosign private key file that signs pushed images and attestations"),
        KeySpec("MOLTBUILD_SIGNING_PASSWORD", "password of MOLTBUILD_SIGNING_KEY", secret=True),
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
    )
}


@dataclass(frozen=True)
class Setting:
    key: str
    value: Any  # str, or Secret for secret keys
    source: str

    @property
    def display(self) -> str:
        return str(self.value)


@dataclass
class Settings:
    values: dict[str, Setting]
    project_root: Path
    warnings: list[str] = field(default_factory=list)

    def __getitem__(self, key: str) -> Any:
        return self.values[key].value

    def get(self, key: str, default: Any = None) -> Any:
        setting = self.values.get(key)
        return default if setting is None or not setting.value else setting.value

    def flag(self, key: str) -> bool:
        """An on/off setting, by the one truthiness rule (validated when the settings load)."""
        return truthy(str(self[key]), key, self.source(key))

    def source(self, key: str) -> str:
        return self.values[key].source

    def seconds(self, key: str) -> float:
        """A setting in seconds: a positive number, else a ConfigError naming the key."""
        raw = str(self[key])
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not value > 0:
            raise ConfigError(
                f"{key}={raw!r} (from {self.source(key)}) must be a number of seconds above 0, e.g. 60"
            )
        return value

    @property
    def secrets(self) -> list[str]:
        """Plain secret values, for the runner's output masking."""
        return [s.value.reveal() for s in self.values.values() if isinstance(s.value, Secret) and s.value]

    @property
    def insecure_registries(self) -> list[str]:
        raw = self.get("MOLTBUILD_INSECURE_REGISTRIES", "")
        return [h.strip() for h in raw.split(",") if h.strip()]

    def allows_plain_http(self, host: str) -> bool:
        """Listed in MOLTBUILD_INSECURE_REGISTRIES, or on loopback (as Docker treats it)."""
        return host in self.insecure_registries or is_loopback(host)

    def as_rows(self) -> list[tuple[str, str, str]]:
        return [(k, s.display, s.source) for k, s in self.values.items()]


_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_env_file(path: Path) -> dict[str, tuple[str, int]]:
    """Parse a dotenv file into {KEY: (value, line)}; any malformed line is a ConfigError.

    The message names FILE:LINE and never echoes the line: it may hold a secret.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason}); re-save it as UTF-8") from None
    except IsADirectoryError:
        raise ConfigError(
            f"{path} is a directory; it must be a KEY=VALUE file (remove or rename it)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from None
    if "\0" in text:
        line = text[: text.index("\0")].count("\n") + 1
        raise ConfigError(f"{path}:{line}: contains a NUL byte; remove it (binary data is not a setting)")
    out: dict[str, tuple[str, int]] = {}
    for binding in parse_stream(io.StringIO(text)):
        raw = binding.original.string
        # The parser folds leading blank lines into the next binding; count them back.
        line = binding.original.line + raw[: len(raw) - len(raw.lstrip())].count("\n")
        if binding.error:
            raise ConfigError(
                f"{path}:{line}: cannot parse this line; write KEY=VALUE "
                "(quote values with spaces, close every quote) or start it with #"
            )
        if binding.key is None:
            continue
        if not _KEY_RE.match(binding.key):
            raise ConfigError(f"{path}:{line}: `{binding.key}` is not a valid variable name")
        if binding.value is None:
            raise ConfigError(
                f"{path}:{line}: `{binding.key}` has no `=`; write {binding.key}=VALUE "
                f"(or {binding.key}= for empty)"
            )
        out[binding.key] = (binding.value, line)
    return out


def _unknown_key_warnings(keys: list[str], where: str) -> list[str]:
    warnings = []
    for key in keys:
        if key.startswith("MOLTBUILD_") and key not in KEYS:
            close = difflib.get_close_matches(key, list(KEYS), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else ""
            warnings.append(f"unknown setting {key} in {where}{hint}")
    return warnings


_HOST_PORT_RE = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?$")


def _validate(spec: KeySpec, value: str, source: str) -> None:
    if spec.flag:
        truthy(value, spec.key, source)
    if spec.choices and value not in spec.choices:
        raise ConfigError(f"{spec.key}={value!r} (from {source}) is not one of {', '.join(spec.choices)}")
    if spec.key == "MOLTBUILD_INSECURE_REGISTRIES":
        for host in (h.strip() for h in value.split(",") if h.strip()):
            if not _HOST_PORT_RE.match(host):
                raise ConfigError(
                    f"{spec.key} (from {source}): {host!r} is not HOST[:PORT]; list hosts without "
                    "a scheme or path, e.g. 127.0.0.1:5000,registry.lan"
                )
    key_file = spec.key in ("MOLTBUILD_SIGNING_KEY", "MOLTBUILD_VERIFY_KEY")
    if key_file and value and not Path(value).expanduser().is_file():
        raise ConfigError(
            f"{spec.key}={value!r} (from {source}) is not a file; point it at a cosign key "
            "(`cosign generate-key-pair` writes cosign.key and cosign.pub)"
        )
    if spec.key == "MOLTBUILD_REGISTRY_CA" and value:
        path = Path(value).expanduser()
        if not path.is_file():
            what = "is a directory" if path.is_dir() else "does not exist"
            raise ConfigError(
                f"{spec.key}={value!r} (from {source}) {what}; point it at the registry's CA bundle (PEM)"
            )


def load_settings(
    project_root: Path,
    *,
    environ: Mapping[str, str] | None = None,
    cli: Mapping[str, Any] | None = None,
    overrides: Mapping[str, tuple[str, str]] | None = None,
    tool_config: Mapping[str, Any] | None = None,
) -> Settings:
    """Resolve every known key by precedence and record where its value came from.

    `cli` maps KEY -> (value, flag name) for flags that were given; `overrides` maps KEY ->
    (value, source name) for values a command sets itself (the pipeline's embedded registry),
    above the environment and below flags; `tool_config` is the [tool.moltbuild] table (read
    from pyproject.toml when None). An empty value means unset, in every layer.
    """
    environ = os.environ if environ is None else environ
    cli = cli or {}
    if tool_config is None:
        tool_config = read_tool_table(project_root)

    layers: list[tuple[str, dict[str, tuple[str, str]]]] = []
    warnings: list[str] = []
    for name in (".env.local", ".env"):
        path = project_root / name
        if path.exists():
            parsed = parse_env_file(path)
            layers.append((name, {k: (v, f"{name}:{ln}") for k, (v, ln) in parsed.items()}))
            warnings += _unknown_key_warnings(list(parsed), name)
    warnings += _unknown_key_warnings(sorted(environ), "the environment")

    values: dict[str, Setting] = {}
    for key, spec in KEYS.items():
        value, source = spec.default, "default"
        if spec.pyproject and spec.pyproject in tool_config:
            value, source = (
                str(tool_config[spec.pyproject]),
                f"pyproject.toml [tool.moltbuild] {spec.pyproject}",
            )
        for _name, layer in reversed(layers):  # .env first, then .env.local overrides
            if layer.get(key, ("",))[0] != "":
                value, source = layer[key]
        if environ.get(key):
            value, source = environ[key], "environment"
        if (overrides or {}).get(key):
            value, source = overrides[key]  # type: ignore[index]
        if key in cli and cli[key] is not None:
            flag_value, flag = cli[key]
            value, source = str(flag_value), f"flag {flag}"
        _validate(spec, value, source)
        values[key] = Setting(key, Secret(value) if spec.secret else value, source)
    return Settings(values=values, project_root=project_root, warnings=warnings)
