"""On a terminal, a live status: one line per image, redrawn in place as its build moves on,
while every other line scrolls above it. Pipes and CI get the same lines, plain."""

from __future__ import annotations

import shutil
from collections.abc import Callable


class LiveBoard:
    def __init__(self, write: Callable[[str], None]):
        self.write = write
        self.status: dict[str, str] = {}
        self.drawn = 0

    def line(self, text: str) -> None:
        """A line that stays: printed above the board."""
        self._clear()
        self.write(text + "\n")
        self._draw()

    def update(self, key: str, text: str) -> None:
        """The current status of `key` (an image): replaces its previous one in place."""
        self.status[key] = text
        self._clear()
        self._draw()

    def drop(self, key: str) -> None:
        if key in self.status:
            self._clear()
            del self.status[key]
            self._draw()

    def _clear(self) -> None:
        if self.drawn:
            self.write(f"\x1b[{self.drawn}F\x1b[J")  # up to the board's first line, erase below
            self.drawn = 0

    def _draw(self) -> None:
        width = shutil.get_terminal_size((100, 20)).columns - 1  # a wrapped line would break the count
        for text in self.status.values():
            self.write((text if len(text) <= width else text[: width - 3] + "...") + "\n")
        self.drawn = len(self.status)
