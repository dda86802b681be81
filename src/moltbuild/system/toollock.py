"""The lock of the Go-built tools (kustomize, syft, cosign): each pinned by module version, the Go
its go.mod asks for (the floor), and the sha256 of its binary per platform as `go install` makes it
with the lock's Go version and build flags. The file (`go-tools.lock.toml` beside this module) is
read here and written by `invoke setup --relock`; a binary from any cache is used only when its
hash is the lock's."""

from __future__ import annotations

import hashlib
import json
import platform as host_platform
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from moltbuild.errors import ConfigError

LOCK_PATH = Path(__file__).with_name("go-tools.lock.toml")
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


@dataclass(frozen=True)
class Tool:
    name: str
    module: str  # the package `go install` builds
    version: str
    go_min: str  # the `go` line of the module's go.mod: the oldest Go that builds it
    why: str
    sha256: Mapping[str, str] = field(default_factory=dict)  # "linux/amd64" -> hex digest

    def title(self) -> str:
        return f"{self.name} {self.version}"


@dataclass(frozen=True)
class Lock:
    go: str  # the Go version the hashes were made with ("1.26.8")
    flags: tuple[str, ...]  # `go install` flags
    env: Mapping[str, str]  # the build environment (CGO_ENABLED, GOFLAGS)
    tools: Mapping[str, Tool]
    path: Path = LOCK_PATH

    def with_tool(self, tool: Tool) -> Lock:
        return replace(self, tools={**self.tools, tool.name: tool})


def platform() -> str:
    machine = host_platform.machine().lower()
    return f"{host_platform.system().lower()}/{_ARCH.get(machine, machine)}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load(path: Path = LOCK_PATH) -> Lock:
    """The lock, or a one-line error naming the file and the key."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the tool lock ({exc}); restore it from git") from None
    try:
        tools = {name: _tool(name, t) for name, t in data["tools"].items()}
        return Lock(str(data["go"]), tuple(data["flags"]), dict(data["env"]), tools, path)
    except (KeyError, TypeError, AttributeError) as exc:
        fix = "restore it from git or regenerate it: invoke setup --relock"
        raise ConfigError(f"{path}: key {exc} missing or malformed; {fix}") from None


def _tool(name: str, t: Mapping) -> Tool:
    hashes = dict(t.get("sha256", {}))
    return Tool(name, t["module"], t["version"], str(t["go_min"]), t.get("why", ""), hashes)


def dumps(lock: Lock) -> str:
    q = json.dumps  # a JSON string is a TOML basic string
    lines = [
        "# The Go-built tools, pinned: module version, the Go its go.mod needs (go_min), and the",
        "# sha256 of the binary `go install` makes with Go `go`, `flags` and `env`, per platform.",
        "# A cached binary is used only when its hash is this one. Regenerate: invoke setup --relock",
        f"go = {q(lock.go)}",
        f"flags = [{', '.join(q(f) for f in lock.flags)}]",
        f"env = {{ {', '.join(f'{k} = {q(v)}' for k, v in lock.env.items())} }}",
    ]
    for tool in lock.tools.values():
        lines += ["", f"[tools.{tool.name}]", f"module = {q(tool.module)}", f"version = {q(tool.version)}"]
        lines += [f"go_min = {q(tool.go_min)}", f"why = {q(tool.why)}"]
        hashes = ", ".join(f"{q(p)} = {q(h)}" for p, h in sorted(tool.sha256.items()))
        lines.append(f"sha256 = {{ {hashes} }}")
    return "\n".join(lines) + "\n"


def go_version(text: str) -> str | None:
    """ "1.26.8" from `go version` output ("go version go1.26.8 linux/amd64"), or None."""
    found = re.search(r"\bgo(\d+\.\d+(?:\.\d+)?)", text)
    return found.group(1) if found else None


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def floor_problem(tool: Tool, found: str | None, lock: Lock) -> str | None:
    """Why this Go cannot build the tool, said exactly; None when it can."""
    install = f"install Go {lock.go} (the lock's hashes are of builds with it): https://go.dev/dl/"
    if found is None:
        return f"{tool.title()} needs Go {tool.go_min} or newer; no `go` on PATH: {install}"
    if _key(found) < _key(tool.go_min):
        return f"{tool.title()} needs Go {tool.go_min} or newer; found {found}: {install}"
    return None


def mismatch(tool: Tool, expected: str, actual: str, where: Path) -> str:
    return f"{tool.name}: refused {where}: sha256 {actual[:16]}…, the lock says {expected[:16]}…"
