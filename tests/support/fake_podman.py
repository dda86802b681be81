"""A podman stand-in for the smoke check's unit tests: the verbs it uses (image inspect, run -d,
port, inspect, exec, logs, kill, rm), answered as podman 4 answers them, errors and exit codes
included. A "container" is a process of this machine started through a small monitor that records
its exit code (conmon's part), with the environment podman would give it: the image's Env, then
each --env-file read by podman's own rules (pkg/env ParseFile). Its published ports are the test's
HTTP servers (state/ports.json: container port -> host port) or free ports.

State lives in $FAKE_PODMAN_STATE: calls.jsonl (every argv), inspect.json (what `image inspect`
prints), containers/NAME/ (env.json, ports.json, log, pid, exitcode) and received/NAME.json (each
env file as it was when `run` read it: path, text, its mode and its directory's). Switches, each a
file: no-image, run-fails, run-delay (seconds `run` waits after reading its env files). The log is
conmon's k8s-file: a record per piece of output as it was read, `F text` for a line, `P text` for a
piece without its newline yet. Where it differs from podman: the container's stdout and stderr share
one log, which `logs` prints on stdout.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

STATE = Path(os.environ["FAKE_PODMAN_STATE"])
CONTAINERS = STATE / "containers"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# conmon's part: run the container's command, write its output as k8s-file records as it comes
# (a piece read before its newline is a P record), record how it ended after the output is drained;
# with --rm, remove the container.
MONITOR = """\
import os, shutil, subprocess, sys, threading
from pathlib import Path
home, rm, argv = Path(sys.argv[1]), sys.argv[2] == "rm", sys.argv[3:]
log = (home / "log").open("a")

def records(read):
    while chunk := read():
        *lines, rest = chunk.decode(errors="replace").split("\\n")
        log.write("".join(f"F {line}\\n" for line in lines) + (f"P {rest}\\n" if rest else ""))
        log.flush()

try:
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
except OSError as exc:
    log.write(f"F {exc}\\n")
    code = 127
else:
    pump = threading.Thread(target=records, args=(lambda: os.read(proc.stdout.fileno(), 8192),))
    pump.start()
    code = proc.wait()
    pump.join(timeout=2)  # conmon drains what is there; a child left holding the pipe is not waited for
log.close()
code = 128 - code if code < 0 else code
(home / "exitcode.tmp").write_text(str(code))
(home / "exitcode.tmp").replace(home / "exitcode")
if rm:
    shutil.rmtree(home, ignore_errors=True)
"""


def fail(message: str, code: int = 125) -> None:
    sys.stderr.write(f"Error: {message}\n")
    sys.exit(code)


def container(name: str, code: int = 125) -> Path:
    home = CONTAINERS / name
    if not home.is_dir():
        fail(f'no container with name or ID "{name}" found: no such container', code)
    return home


def running(home: Path) -> bool:
    return not (home / "exitcode").exists()


def stop(home: Path) -> None:
    with contextlib.suppress(ProcessLookupError, FileNotFoundError, ValueError):
        os.killpg(int((home / "pid").read_text()), signal.SIGKILL)
    if running(home):
        (home / "exitcode").write_text("137")


def parse_env_file(path: str) -> dict[str, str]:
    """podman's pkg/env ParseFile: a line each (bufio.Scanner: under 64 KiB, a trailing CR
    dropped), leading blanks trimmed, '#' lines skipped, NAME=VALUE split at the first '=' with the
    value verbatim; a bare NAME takes podman's own variable of that name."""
    try:
        text = Path(path).read_bytes().decode()
    except OSError as exc:
        fail(f"open {path}: {exc.strerror.lower()}")
    env = {}
    for raw in text.split("\n"):
        if len(raw.encode()) + 1 >= 64 * 1024:
            fail(f'parsing file "{path}": bufio.Scanner: token too long')
        line = raw.removesuffix("\r").lstrip(" \t")
        if not line or line.startswith("#"):
            continue
        key, has_value, value = line.partition("=")
        if not key:
            fail(f'parsing file "{path}": invalid variable: "{line}"')
        name = key.lstrip(" \t")
        if has_value:
            env[name] = value
        elif name in os.environ:
            env[name] = os.environ[name]
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def parse_run(args: list[str]) -> tuple[dict[str, list[str]], set[str], str, list[str]]:
    valued: dict[str, list[str]] = {
        "--name": [],
        "--label": [],
        "--env-file": [],
        "-p": [],
        "--ulimit": [],
        "-e": [],
    }
    switches: set[str] = set()
    i = 0
    while i < len(args) and args[i].startswith("-"):
        if args[i] in valued and i + 1 < len(args):
            valued[args[i]].append(args[i + 1])
            i += 2
        elif args[i] in ("-d", "--rm"):
            switches.add(args[i])
            i += 1
        else:
            fail(f"unknown flag: {args[i]}")
    if i >= len(args):
        fail("requires at least 1 arg(s), only received 0")
    return valued, switches, args[i], args[i + 1 :]


def received(path: str) -> dict[str, str]:
    return {
        "path": path,
        "text": Path(path).read_text(),
        "mode": oct(Path(path).stat().st_mode & 0o777),
        "dir_mode": oct(Path(path).parent.stat().st_mode & 0o777),
    }


def run(args: list[str]) -> None:
    valued, switches, _image, command = parse_run(args)
    if "-d" not in switches:
        fail("this stand-in runs detached containers only (-d)")
    info = json.loads((STATE / "inspect.json").read_text() or "[]")
    config = (info[0].get("Config") if info else None) or {}
    argv = list(config.get("Entrypoint") or []) + list(command or config.get("Cmd") or [])
    if not argv:
        fail("no command or entrypoint provided, and no CMD or ENTRYPOINT from image")
    env = {"PATH": PATH, "container": "podman"}
    env.update(item.split("=", 1) for item in config.get("Env") or [] if "=" in item)
    for path in valued["--env-file"]:
        env.update(parse_env_file(path))
    env.update(item.split("=", 1) for item in valued["-e"] if "=" in item)
    name = (valued["--name"] or [secrets.token_hex(6)])[-1]
    received_dir = STATE / "received"
    received_dir.mkdir(exist_ok=True)
    (received_dir / f"{name}.json").write_text(json.dumps([received(p) for p in valued["--env-file"]]))
    if (STATE / "run-fails").exists():
        fail("cannot start")
    if (STATE / "run-delay").exists():
        time.sleep(float((STATE / "run-delay").read_text()))
    home = CONTAINERS / name
    try:
        home.mkdir(parents=True)
    except FileExistsError:
        fail(f'creating container storage: the container name "{name}" is already in use')
    wanted = json.loads((STATE / "ports.json").read_text()) if (STATE / "ports.json").exists() else {}
    published = {}
    for spec in valued["-p"]:
        ip, host, port = spec.rsplit(":", 2)
        published[port] = [ip or "0.0.0.0", int(host or wanted.get(port) or free_port())]
    (home / "ports.json").write_text(json.dumps(published))
    (home / "env.json").write_text(json.dumps(env))
    (home / "log").touch()
    with (home / "monitor.out").open("w") as out:  # the monitor's own trouble, apart from the log
        monitor = subprocess.Popen(
            [sys.executable, "-c", MONITOR, str(home), "rm" if "--rm" in switches else "keep", *argv],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (home / "pid").write_text(str(monitor.pid))
    print(secrets.token_hex(32))


def inspect(args: list[str]) -> None:
    template = None
    if args[0] in ("--format", "-f"):
        template, args = args[1], args[2:]
    home = CONTAINERS / args[0]
    if not home.is_dir():
        fail(f'inspecting object: no such object: "{args[0]}"')
    status, code = ("running", "0") if running(home) else ("exited", (home / "exitcode").read_text())
    if template is None:
        print(json.dumps([{"Name": args[0], "State": {"Status": status, "ExitCode": int(code)}}]))
        return
    out = template.replace("{{.State.Status}}", status).replace("{{.State.ExitCode}}", code)
    if "{{" in out:
        fail(f"template: this stand-in knows .State.Status and .State.ExitCode only: {template}")
    print(out)


def execute(args: list[str]) -> None:
    home = container(args[0])
    if not running(home):
        fail("can only create exec sessions on running containers: container state improper", 255)
    env = json.loads((home / "env.json").read_text())
    try:
        sys.exit(subprocess.call(args[1:], env=env))
    except FileNotFoundError:
        fail(f"crun: executable file `{args[1]}` not found in $PATH: No such file or directory", 127)


def logs(args: list[str]) -> None:
    """The log's lines, P pieces joined to the line they start. With `--tail N` as podman 4.3 reads
    a k8s-file (fixed upstream by containers/podman#19562): the last N records, P pieces' text lost."""
    tail = -1
    if args[0] == "--tail":
        tail, args = int(args[1]), args[2:]
    records = (container(args[0]) / "log").read_text().splitlines()
    if tail >= 0:
        records = [f"F {r[2:] if r.startswith('F') else ''}" for r in records[len(records) - tail :]]
    sys.stdout.write("".join(r[2:] + ("" if r.startswith("P") else "\n") for r in records))


def port(args: list[str]) -> None:
    home = container(args[0])
    if not running(home):
        return  # podman 4 prints nothing for a container that is not running, and exits 0
    found = json.loads((home / "ports.json").read_text()).get(args[1].split("/")[0])
    if not found:
        fail(f'failed to find published port "{args[1]}"')
    print(f"{found[0]}:{found[1]}")


def kill(args: list[str]) -> None:
    home = container(args[0])
    if not running(home):
        fail(f"can only kill running containers. {args[0]} is in state exited: container state improper")
    stop(home)
    print(args[0])


def remove(args: list[str]) -> None:
    force = "-f" in args or "--force" in args
    for name in [a for a in args if not a.startswith("-")]:
        if force and not (CONTAINERS / name).is_dir():
            continue  # podman 4: `rm -f` of no such container says nothing, exits 0
        home = container(name, code=1)
        if running(home):
            if not force:
                fail(f"cannot remove container {name} as it is running: container state improper", 2)
            stop(home)
        shutil.rmtree(home)
        print(name)


def main(args: list[str]) -> None:
    with (STATE / "calls.jsonl").open("a") as calls:
        calls.write(json.dumps(args) + "\n")
    if args[:2] == ["image", "inspect"]:
        if (STATE / "no-image").exists():
            fail(f"inspecting object: {args[2]}: image not known")
        sys.stdout.write((STATE / "inspect.json").read_text() if (STATE / "inspect.json").exists() else "[]")
        return
    verbs = {"run": run, "inspect": inspect, "exec": execute, "logs": logs, "port": port, "kill": kill}
    verb = verbs.get(args[0]) if args else None
    if args and args[0] == "rm":
        verb = remove
    if verb is None:
        fail(f"unrecognized command `podman {' '.join(args[:1])}`")
    verb(args[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
