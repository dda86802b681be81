"""moltbuild is adopted into any repository (`moltbuild init`): the names of the project it was
first written for (its images, its organisation) live in pyproject.toml, never in src/."""

from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "moltbuild"
NAMES = re.compile(r'ardenone|moltbook|"api"|"frontend"', re.IGNORECASE)


def test_no_app_or_organisation_name_in_the_package():
    found = [
        f"{path.relative_to(SRC)}:{number}: {line.strip()}"
        for path in sorted(SRC.rglob("*"))
        if path.is_file() and path.suffix in (".py", ".yml", ".yaml", ".toml", ".md")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if NAMES.search(line)
    ]
    assert found == []
