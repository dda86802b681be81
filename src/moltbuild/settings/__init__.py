"""Settings: the one reader. One function owns precedence and returns every value with its source,
parsed once by its KeySpec (on/off words, enums); the declarations live in `settings.keys`.

Precedence, highest first: CLI flag > process env > .env.local > .env > [tool.moltbuild] > default.
"""

from __future__ import annotations

import difflib
import io
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dotenv.parser import parse_stream

from moltbuild.errors import ConfigError
from moltbuild.project import read_tool_table
from moltbuild.refs import is_loopback
from moltbuild.settings.keys import (
    BACKENDS,
    FALSE_WORDS,
    KEYS,
    MASK,
    TRUE_WORDS,
    KeySpec,
    Secret,
    choose,
    ci_platform,
    platform_on,
    truthy,
)

__all__ = [
    "BACKENDS",
    "FALSE_WORDS",
    "KEYS",
    "MASK",
    "TRUE_WORDS",
    "KeySpec",
    "Secret",
    "Setting",
    "Settings",
    "choose",
    "ci_platform",
    "load_settings",
    "parse_env_file",
    "platform_on",
    "truthy",
]


@dataclass(frozen=True)
class Setting:
    key: str
    value: Any  # str (an enum's canonical choice), or Secret for secret keys
    source: str
    parsed: Any = None  # what the KeySpec reads it as: a bool for on/off keys, else the value

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
        """An on/off setting, as parsed once when the settings loaded (the one truthiness rule)."""
        if not (KEYS[key].flag or KEYS[key].platform):
            raise KeyError(f"{key} is not an on/off setting")
        return bool(self.values[key].parsed)

    def choice(self, key: str) -> str:
        """An enum setting (MOLTBUILD_ATTEST, MOLTBUILD_BACKEND, ...): its canonical choice."""
        if not KEYS[key].choices:
            raise KeyError(f"{key} is not a choice setting")
        return str(self.values[key].parsed)

    @property
    def ci(self) -> str | None:
        """Are we in CI: "github-actions", "ci" or None (`settings.keys.ci_platform`)."""
        return ci_platform({key: str(self[key]) for key in ("CI", "GITHUB_ACTIONS")})

    def source(self, key: str) -> str:
        return self.values[key].source

    def seconds(self, key: str) -> float:
        """A setting in seconds: a positive finite number (`inf`, `1e400`, `nan` are refused: a
        deadline must be reachable), else a ConfigError naming the key."""
        raw = str(self[key])
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(
                f"{key}={raw!r} (from {self.source(key)}) must be a finite number of seconds above 0, e.g. 60"
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


def _check_hosts(spec: KeySpec, value: str, source: str) -> None:
    for host in (h.strip() for h in value.split(",") if h.strip()):
        if not _HOST_PORT_RE.match(host):
            raise ConfigError(
                f"{spec.key} (from {source}): {host!r} is not HOST[:PORT]; list hosts without "
                "a scheme or path, e.g. 127.0.0.1:5000,registry.lan"
            )


def _check_key_file(spec: KeySpec, value: str, source: str) -> None:
    if value and not Path(value).expanduser().is_file():
        raise ConfigError(
            f"{spec.key}={value!r} (from {source}) is not a file; point it at a cosign key "
            "(`cosign generate-key-pair` writes cosign.key and cosign.pub)"
        )


def _check_ca(spec: KeySpec, value: str, source: str) -> None:
    path = Path(value).expanduser()
    if value and not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise ConfigError(
            f"{spec.key}={value!r} (from {source}) {what}; point it at the registry's CA bundle (PEM)"
        )


_CHECKS = {
    "MOLTBUILD_INSECURE_REGISTRIES": _check_hosts,
    "MOLTBUILD_SIGNING_KEY": _check_key_file,
    "MOLTBUILD_VERIFY_KEY": _check_key_file,
    "MOLTBUILD_REGISTRY_CA": _check_ca,
}


def _setting(spec: KeySpec, value: str, source: str) -> Setting:
    """Check and parse one resolved value, once: every reader gets the same answer."""
    parsed = spec.parse(value, source)
    check = _CHECKS.get(spec.key)
    if check:
        check(spec, value, source)
    if spec.choices:
        value = parsed  # the canonical spelling: `ON` is `on` for every reader
    return Setting(spec.key, Secret(value) if spec.secret else value, source, parsed)


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
    if tool_config is None:
        tool_config = read_tool_table(project_root)
    files, warnings = _env_files(project_root)
    warnings += _unknown_key_warnings(sorted(environ), "the environment")
    layers = [  # lowest precedence first
        _pyproject_layer(tool_config),
        *files,
        {k: (v, "environment") for k, v in environ.items()},
        dict(overrides or {}),
        _flag_layer(cli or {}),
    ]
    values: dict[str, Setting] = {}
    for key, spec in KEYS.items():
        value, source = spec.default, "default"
        for layer in layers:
            if layer.get(key, ("",))[0] != "":
                value, source = layer[key]
        values[key] = _setting(spec, value, source)
    return Settings(values=values, project_root=project_root, warnings=warnings)


def _flag_layer(cli: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """KEY -> (value, flag) for the flags given: a flag left out (None) or None-valued is no layer."""
    given = {key: pair for key, pair in cli.items() if pair is not None and pair[0] is not None}
    return {key: (str(value), f"flag {flag}") for key, (value, flag) in given.items()}


def _pyproject_layer(tool_config: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    return {
        spec.key: (str(tool_config[spec.pyproject]), f"pyproject.toml [tool.moltbuild] {spec.pyproject}")
        for spec in KEYS.values()
        if spec.pyproject and spec.pyproject in tool_config
    }


def _env_files(project_root: Path) -> tuple[list[dict[str, tuple[str, str]]], list[str]]:
    """.env then .env.local (it overrides), each as KEY -> (value, FILE:LINE); unknown-key warnings."""
    layers: list[dict[str, tuple[str, str]]] = []
    warnings: list[str] = []
    for name in (".env.local", ".env"):
        path = project_root / name
        if path.exists():
            parsed = parse_env_file(path)
            layers.append({k: (v, f"{name}:{ln}") for k, (v, ln) in parsed.items()})
            warnings += _unknown_key_warnings(list(parsed), name)
    return layers[::-1], warnings
