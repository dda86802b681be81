"""The terminal's live status: step lines replace each other per image, other lines scroll above."""

import os

from moltbuild.system.live import LiveBoard
from moltbuild.system.processes import Runner


def test_a_status_replaces_the_last_one_of_its_image_and_lines_scroll_above(monkeypatch):
    written: list[str] = []
    board = LiveBoard(written.append)
    board.update("[api] ", "[api] build 1/3: FROM x")
    board.update("[frontend] ", "[frontend] build 1/2: FROM y")
    board.update("[api] ", "[api] build 2/3: COPY a b")
    board.line("[api] smoke: passed")
    screen = "".join(written)
    assert screen.count("\x1b[2F\x1b[J") == 2  # redrawn in place, two lines each time
    assert screen.endswith("[api] smoke: passed\n[api] build 2/3: COPY a b\n[frontend] build 1/2: FROM y\n")
    board.drop("[api] ")
    assert "".join(written).endswith("\x1b[2F\x1b[J[frontend] build 1/2: FROM y\n")


def test_without_a_terminal_every_line_is_plain():
    out: list[str] = []
    runner = Runner(environ=os.environ, out=out.append, verbose=False, live=False)
    runner.say("[api] build 1/3: FROM x", status="[api] ")
    runner.say("[api] ok in 1.0s")
    assert out == ["[api] build 1/3: FROM x", "[api] ok in 1.0s"] and "\x1b" not in "".join(out)
