"""The runner: the one place that starts processes. Children here are python or sh only, each
started by the test itself and stopped before it ends."""

from __future__ import annotations

import os
import select
import signal
import sys
import time
from pathlib import Path

import pytest

from moltbuild.errors import CommandError, ToolMissingError
from moltbuild.settings import MASK, Secret
from moltbuild.system import state
from moltbuild.system.console import condense, mask_known_secrets
from moltbuild.system.processes import Result, Runner, terminate_all, which

PY = sys.executable


def py(code: str, *args: str) -> list[str]:
    return [PY, "-c", code, *args]


def quiet(lines: list[str] | None = None, **kwargs) -> Runner:
    """A runner whose output lands in `lines`."""
    return Runner(environ=os.environ, out=(lines if lines is not None else []).append, **kwargs)


def wait_for_file(path: Path, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return path.read_text()
        time.sleep(0.02)
    raise AssertionError(f"{path} never appeared")


def exited(pid_fd: int, timeout: float) -> bool:
    """A pidfd becomes readable when its process has ended (works for a grandchild too)."""
    return bool(select.select([pid_fd], [], [], timeout)[0])


@pytest.fixture()
def spawned():
    """Processes a test spawns; any still running at the end are stopped."""
    procs = []
    yield procs
    for proc in procs:
        Runner.stop(proc, grace=1)


# --- run: capture, failures, tails -------------------------------------------------------------


def test_run_captures_stdout_and_stderr_and_passes_env_and_cwd(tmp_path):
    code = "import os, sys; print(os.getcwd()); print(os.environ['GREETING']); print('oops', file=sys.stderr)"
    res = quiet().run(py(code), env={"GREETING": "hello"}, cwd=tmp_path)
    assert res.ok and res.returncode == 0
    assert res.stdout.splitlines() == [str(tmp_path), "hello"]
    assert res.stderr.strip() == "oops"


def test_a_tools_non_utf8_output_is_read_not_a_crash():
    res = quiet().run(py("import sys; sys.stdout.buffer.write(b'a\\xffb')"), mutates=False)
    assert res.stdout == "a\ufffdb"  # a file name in another encoding: replaced, the run goes on


def test_run_feeds_stdin():
    res = quiet().run(py("import sys; print(sys.stdin.read().upper())"), stdin="abc")
    assert res.stdout.strip() == "ABC"


def test_a_failing_command_raises_with_its_exit_code_and_stderr_tail():
    code = (
        "import sys; print('out'); print('first', file=sys.stderr); "
        "print('last words', file=sys.stderr); sys.exit(3)"
    )
    with pytest.raises(CommandError, match=r"^pushing api failed with exit code 3: last words$") as info:
        quiet().run(py(code), what="pushing api")
    assert info.value.returncode == 3
    assert info.value.tail.splitlines() == ["first", "last words"]
    assert info.value.argv[0] == PY


def test_the_tail_falls_back_to_stdout_and_the_head_to_the_command():
    code = "import sys; print('only on stdout'); sys.exit(2)"
    with pytest.raises(CommandError) as info:
        quiet().run(py(code))
    assert info.value.message == f"`{PY} -c {code}` failed with exit code 2: only on stdout"


def test_check_false_returns_the_failure_instead_of_raising():
    res = quiet().run(py("import sys; sys.exit(5)"), check=False)
    assert not res.ok and res.returncode == 5


def test_result_ok_follows_the_return_code():
    assert Result(["x"], 0).ok and not Result(["x"], 1).ok


def test_a_timeout_kills_the_command_and_says_so():
    start = time.monotonic()
    with pytest.raises(CommandError, match=r"failed with exit code -9: timed out after 0.3s") as info:
        quiet().run(py("import time; time.sleep(30)"), timeout=0.3, what="slow")
    assert time.monotonic() - start < 2.5
    assert info.value.returncode == -9 and info.value.message.startswith("slow failed")


def test_a_timeout_bounds_the_call_even_when_a_descendant_left_the_process_group():
    code = (
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(2)'], start_new_session=True); "
        "time.sleep(30)"
    )
    start = time.monotonic()
    with pytest.raises(CommandError, match=r"timed out after 0\.3s"):
        quiet().run(py(code), timeout=0.3)
    assert time.monotonic() - start < 1.2


def test_a_missing_binary_names_the_tool_and_its_install_hint(tmp_path):
    with pytest.raises(ToolMissingError, match=r"buildah` is not installed; fix: apt-get install -y buildah"):
        quiet().run([str(tmp_path / "buildah"), "bud"])
    with pytest.raises(
        ToolMissingError, match=r"`.*/no-such-tool` is not installed; fix: install it$"
    ) as info:
        quiet().stream([str(tmp_path / "no-such-tool")])
    assert info.value.exit_code == 127


# --- secrets -------------------------------------------------------------------------------------


def test_a_secret_in_argv_is_refused_before_anything_runs(tmp_path):
    marker = tmp_path / "ran"
    runner = quiet(secrets=["hunter2-argv"])
    for call in (runner.run, runner.stream):
        with pytest.raises(CommandError, match="refusing to pass a secret in argv") as info:
            call(["sh", "-c", f"echo hunter2-argv > {marker}"])
        assert info.value.argv == ["sh", "-c", f"echo {MASK} > {marker}"]
    with pytest.raises(CommandError, match="refusing to pass a secret in argv"):
        runner.spawn(["sh", "-c", "echo hunter2-argv"], log_path=tmp_path / "spawn.log")
    assert not marker.exists() and not (tmp_path / "spawn.log").exists()


def test_captured_text_is_exact_data_and_masked_only_where_shown():
    lines: list[str] = []
    runner = quiet(lines, secrets=["pa55-capture", ""])
    code = "import sys; v = sys.stdin.read(); print('token', v); print('again', v, file=sys.stderr)"
    res = runner.run(py(code), stdin=Secret("pa55-capture"), echo=True)
    assert res.stdout.strip() == "token pa55-capture" and res.stderr.strip() == "again pa55-capture"
    assert "pa55-capture" not in "\n".join(lines)
    assert runner.mask("x pa55-capture y") == f"x {MASK} y"
    assert runner.mask_argv(["a", "--p=pa55-capture"]) == ["a", f"--p={MASK}"]


def test_a_failure_tail_is_masked_too():
    code = "import sys; print('denied for', sys.stdin.read(), file=sys.stderr); sys.exit(1)"
    with pytest.raises(CommandError) as info:
        quiet(secrets=["pa55-tail"]).run(py(code), stdin=Secret("pa55-tail"))
    assert "pa55-tail" not in info.value.message and info.value.message.endswith(f"denied for {MASK}")


def test_the_longest_secret_is_masked_first():
    runner = quiet(secrets=["abcd", "abcdefg"])
    assert runner.mask("abcdefg abcd") == f"{MASK} {MASK}"


def test_every_secret_given_to_any_runner_is_masked_outside_it():
    quiet(secrets=["known-elsewhere-77"])
    assert mask_known_secrets("error: known-elsewhere-77 rejected") == f"error: {MASK} rejected"


def test_children_do_not_inherit_secret_settings(monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", "ghp-not-for-children")
    monkeypatch.setenv("MOLTBUILD_TEST_PLAIN", "plain")
    code = (
        "import os; print(os.environ.get('GITHUB_TOKEN', 'absent'), os.environ.get('MOLTBUILD_TEST_PLAIN'))"
    )
    assert quiet().run(py(code)).stdout.split() == ["absent", "plain"]
    explicit = quiet().run(py(code), env={"GITHUB_TOKEN": "given"})  # a caller may still hand one on
    assert explicit.stdout.split() == ["given", "plain"]


def test_stream_masks_secrets_on_screen_and_in_its_log(tmp_path):
    lines: list[str] = []
    log = tmp_path / "build.log"
    log.write_text("earlier run\n")
    code = "import sys; s = sys.stdin.read(); print('login with', s); print('done')"
    res = quiet(lines, secrets=["pa55-stream"]).stream(
        py(code), prefix="[api] ", stdin=Secret("pa55-stream"), env={"KEY": "pa55-stream"}, log_path=log
    )
    assert res.ok and res.stdout == "login with pa55-stream\ndone"  # the data, exact
    assert f"[api] login with {MASK}" in lines and "[api] done" in lines
    text = log.read_text()
    assert "pa55-stream" not in text and "pa55-stream" not in "\n".join(lines)
    assert text.startswith("earlier run\n+ KEY=**** ")  # appended, with the masked command first
    assert text.endswith(f"login with {MASK}\ndone\n")


# --- stream --------------------------------------------------------------------------------------


def test_stream_verbose_prints_the_command_and_every_line():
    lines: list[str] = []
    quiet(lines).stream(py("print('one'); print('two')"), prefix="[x] ")
    assert lines[0].startswith(f"[x] + {PY} -c ")
    assert lines[1:] == ["[x] one", "[x] two"]


def test_stream_quiet_shows_build_steps_and_trouble_only(tmp_path):
    lines: list[str] = []
    code = (
        "print('STEP 1/2: FROM python'); print('Collecting requests'); "
        "print('WARNING: slow'); print('STEP 2/2: RUN x')"
    )
    log = tmp_path / "api.log"
    quiet(lines, verbose=False).stream(py(code), prefix="[api] ", log_path=log)
    tool = Path(PY).name
    assert lines == [
        f"[api] + {tool} (command and output: {log})",
        "[api] build 1/2: FROM python",
        "[api] WARNING: slow",
        "[api] build 2/2: RUN x",
    ]
    assert "Collecting requests" in log.read_text()  # the rest goes to the log only


def test_stream_failure_carries_the_last_lines_only():
    code = "import sys; [print('line', i) for i in range(10)]; sys.exit(4)"
    with pytest.raises(CommandError, match=r"^build api failed with exit code 4: line 9$") as info:
        quiet().stream(py(code), tail_lines=3, what="build api")
    assert info.value.tail.splitlines() == ["line 7", "line 8", "line 9"]


def test_stream_merges_stderr_into_the_output():
    res = quiet().stream(py("import sys; print('to err', file=sys.stderr)"))
    assert res.stdout == "to err"


def test_on_a_terminal_build_steps_replace_each_other_and_settle_clears_them(capsys):
    runner = Runner(environ=os.environ, verbose=False, live=True)
    runner.stream(py("print('STEP 1/2: FROM a'); print('STEP 2/2: RUN b')"), prefix="[api] ")
    runner.say("[api] ok")
    runner.settle("[api] ")
    screen = capsys.readouterr().out
    assert "[api] build 1/2: FROM a\n\x1b[1F\x1b[J[api] build 2/2: RUN b\n" in screen
    assert screen.endswith("\x1b[1F\x1b[J[api] ok\n[api] build 2/2: RUN b\n\x1b[1F\x1b[J")


# --- dry run, derive, to_stderr, describe, announce ----------------------------------------------


def test_dry_run_echoes_changing_commands_and_runs_read_only_ones(tmp_path):
    lines: list[str] = []
    marker = tmp_path / "made"
    runner = quiet(lines, dry_run=True)
    res = runner.run(["sh", "-c", f"touch {marker}"], env={"A": "b c"})
    assert res == Result(["sh", "-c", f"touch {marker}"], 0)
    assert lines == [f"+ A='b c' sh -c 'touch {marker}'"]
    assert runner.stream(["sh", "-c", f"touch {marker}"], prefix="[p] ").ok
    assert lines[-1] == f"[p] + sh -c 'touch {marker}'"
    assert not marker.exists()
    assert runner.run(py("print('probe')"), mutates=False).stdout.strip() == "probe"


def test_derive_changes_only_the_dry_run_setting(tmp_path):
    lines: list[str] = []
    marker = tmp_path / "made"
    dry = quiet(lines, dry_run=True, secrets=["pa55-derive"])
    real = dry.derive(dry_run=False)
    assert dry.dry_run and not real.dry_run
    real.run(["sh", "-c", f"touch {marker}"])
    assert marker.exists()
    real.say("key pa55-derive")
    assert lines == [f"key {MASK}"]  # same output and secrets


def test_to_stderr_moves_progress_off_stdout(capsys):
    lines: list[str] = []
    runner = quiet(lines, secrets=["pa55-err"]).to_stderr()
    runner.say("progress pa55-err")
    captured = capsys.readouterr()
    assert captured.err == f"progress {MASK}\n" and captured.out == "" and lines == []


def test_a_runner_without_out_prints_to_stdout(capsys):
    Runner(environ=os.environ).say("plain line")
    assert capsys.readouterr().out == "plain line\n"


def test_describe_quotes_and_masks():
    runner = quiet(secrets=["pa55-describe"])
    described = runner.describe(["tool", "a b", "--x"], {"TOKEN": "pa55-describe", "E": "1"})
    assert described == f"+ TOKEN={MASK} E=1 tool 'a b' --x"
    assert runner.describe(["true"]) == "+ true"


def test_echo_announces_a_run_and_quiet_runners_give_tool_and_verb():
    lines: list[str] = []
    quiet(lines).run(["true"], echo=True)
    assert lines == ["+ true"]
    brief: list[str] = []
    runner = quiet(brief, verbose=False)
    runner.announce(["/usr/bin/buildah", "--storage-driver", "vfs", "bud", "-t", "x", "."], None, "[api] ")
    runner.announce(["/opt/bin/skopeo", "copy", "a", "b"], None, log="/tmp/l.log")
    assert brief == ["[api] + buildah bud", "+ skopeo (command and output: /tmp/l.log)"]
    dry: list[str] = []
    quiet(dry, verbose=False, dry_run=True).announce(["buildah", "push", "x"], {"A": "1"})
    assert dry == ["+ A=1 buildah push x"]  # a dry run always shows the whole command


# --- condense ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, shown",
    [
        ("STEP 3/7: RUN pip install .", "build 3/7: RUN pip install ."),
        ("Step 2/5 : COPY . /app", "build 2/5: COPY . /app"),
        ("#9 [builder 4/6] RUN npm ci", "build 4/6: RUN npm ci"),
        ("#7 [2/3] COPY a b", "build 2/3: COPY a b"),
        ("Error: unauthorized: authentication required", "Error: unauthorized: authentication required"),
        ("Getting image source signatures", None),
        ("Copying blob sha256:abc done", None),
    ],
)
def test_condense_keeps_steps_and_trouble(line, shown):
    assert condense(line) == shown


def test_condense_shortens_long_steps_and_long_trouble():
    assert condense("STEP 1/1: RUN " + "x" * 100) == "build 1/1: RUN " + "x" * 76 + "..."
    assert condense("STEP 1/1: " + "y" * 80) == "build 1/1: " + "y" * 80
    assert condense("failed: " + "z" * 300) == ("failed: " + "z" * 300)[:200]


# --- idle watch ----------------------------------------------------------------------------------


def test_run_cuts_a_child_that_stops_doing_io():
    start = time.monotonic()
    with pytest.raises(
        CommandError, match=r"no progress for 1s \(i/o timeout, MOLTBUILD_IDLE_TIMEOUT\)"
    ) as info:
        quiet().run(py("import time; time.sleep(30)"), idle_timeout=1, what="push api")
    assert time.monotonic() - start < 2.9
    assert info.value.returncode == -9
    assert info.value.tail.strip().endswith("cut; is the registry answering?")


def test_stream_cuts_a_silent_child_and_says_why():
    lines: list[str] = []
    start = time.monotonic()
    with pytest.raises(CommandError, match="no progress for 1s") as info:
        quiet(lines).stream(
            py("print('started', flush=True); import time; time.sleep(30)"), prefix="[p] ", idle_timeout=1
        )
    assert time.monotonic() - start < 2.9
    assert info.value.tail.splitlines()[0] == "started"
    assert lines[-1].startswith("[p] no progress for 1s")


def test_a_busy_child_is_not_cut():
    code = "import time\nfor _ in range(12):\n    print('tick', flush=True); time.sleep(0.1)"
    res = quiet().run(py(code), idle_timeout=1)
    assert res.ok and res.stdout.count("tick") == 12


# --- spawn, stop, terminate_all, which -----------------------------------------------------------


def test_spawn_writes_output_to_its_log_and_stop_ends_it(tmp_path, spawned):
    log = tmp_path / "logs" / "svc.log"
    code = "import time; print('serving', flush=True); time.sleep(30)"
    proc = quiet().spawn(py(code), log_path=log)
    spawned.append(proc)
    deadline = time.monotonic() + 5
    while "serving" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert log.read_text() == "serving\n"
    Runner.stop(proc, grace=2)
    assert proc.returncode == -signal.SIGTERM


def test_stop_kills_a_child_that_ignores_sigterm(tmp_path, spawned):
    ready = tmp_path / "ready"
    code = (
        "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "open(sys.argv[1], 'w').close(); time.sleep(30)"
    )
    proc = quiet().spawn(py(code, str(ready)), log_path=tmp_path / "svc.log")
    spawned.append(proc)
    wait_for_file(ready)
    start = time.monotonic()
    Runner.stop(proc, grace=0.3)
    assert proc.returncode == -signal.SIGKILL and time.monotonic() - start < 2


def test_terminate_all_stops_a_child_and_the_descendant_that_left_its_group(tmp_path, spawned, monkeypatch):
    # terminate_all stops every child this process tracks: hide the ones other tests own (a
    # session-wide registry of the integration tests), so only this test's child is signalled.
    monkeypatch.setattr(state, "_children", set())
    pidfile = tmp_path / "grandchild.pid"
    code = (
        "import os, subprocess, sys, time\n"
        "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'],\n"
        "                     start_new_session=True)\n"
        "open(sys.argv[1] + '.tmp', 'w').write(str(g.pid))\n"
        "os.replace(sys.argv[1] + '.tmp', sys.argv[1])\n"
        "time.sleep(30)\n"
    )
    proc = quiet().spawn(py(code, str(pidfile)), log_path=tmp_path / "tree.log")
    spawned.append(proc)
    grandchild = os.pidfd_open(int(wait_for_file(pidfile)))
    try:
        assert not exited(grandchild, 0)
        terminate_all(grace=2)
        assert proc.wait(timeout=2) == -signal.SIGTERM
        assert exited(grandchild, 2), "the grandchild in its own session survived"
    finally:
        os.close(grandchild)


def test_which_finds_a_tool_or_says_how_to_install_it(tmp_path):
    tool = tmp_path / "mytool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert which("mytool", path=str(tmp_path)) == str(tool)
    with pytest.raises(
        ToolMissingError, match=r"^`kubectl` is not installed or not on PATH; fix: install kubectl: https"
    ):
        which("kubectl", path=str(tmp_path / "empty"))
    with pytest.raises(
        ToolMissingError, match=r"`frobnicate` is not installed or not on PATH; fix: install frobnicate$"
    ):
        which("frobnicate", path=str(tmp_path))
