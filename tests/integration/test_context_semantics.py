"""Differential: the files moltbuild says a build sends (.dockerignore applied) against the files
buildah really copies with `COPY . /ctx/`, for several .dockerignore variants on one tree."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from moltbuild.backends.buildah import storage_flags
from moltbuild.plan.inputs import context_files
from tests.integration.conftest import run_in_image

pytestmark = pytest.mark.integration

FILES = [
    *(f"app/{n}" for n in ("app.py", "__init__.py", "__main__.py", "b.py", "x.txt", "!bang.py")),
    *(f"docs/{n}" for n in ("README.md", "guide.md", "sub/deep.md", "sub/more/x.md")),
    *(f"logs/{n}" for n in ("a.log", "keep.txt", "old/b.log", "old/keep.txt")),
    "build/out.bin",
    "builder.py",
    "src/build/y.txt",
    "src/pkg/mod.py",
    "src/pkg/mod.pyc",
    "node_modules/m/index.js",
    "node_modules/keep/README",
    "deep/a/node_modules/x.js",
    "deep/a/real.txt",
    *("a1", "b2", "c3", "Z9", "ab", "café.txt", "sp ace.txt", "x+y.txt", "xy.txt", "xxy.txt", "notes.md"),
    *("zzb", "q(1)", "q1", "{z}", "z", "dollar$"),
]
LINKS = {"lib": "app", "main.py": "app/app.py", "dangling": "nowhere"}

VARIANTS = {
    "negated-class-bang": "app/[!a]*.py\n",
    "classes-and-question": "app/[^a]*.py\n[a-c][0-9]\n?2\n[[:alpha:]]9\n",
    "dir-with-exception": "docs\n!docs/README.md\n**/node_modules\n!node_modules/keep\n",
    "slashes": "/build/\nlogs/\n!/logs/keep.txt\n*.md\n",
    "double-star": "**/*.log\n**/keep.txt\n!logs/old\nlib\nsrc/**\n!src/pkg/*.py\n",
    "everything-but": "*\n!app\napp/x.txt\n!docs/sub/\ndocs/sub/more\n",
    "wildcard-exception": "logs\n!**/keep.txt\n",
    "cleaned": "./deep//a/../a/\n**/*.js\n!node_modules/keep/../keep/README\n  # not a comment\n",
    "comments-and-specials": "# *.py\nsp ace.txt\ncaf?.txt\nmain.py\ndangling\n",
    "regexp-specials": "x+y.txt\na|b\nq(1)\n{z}\ndollar$\n",
}


def make_tree(root: Path, ignore: str) -> Path:
    for i, rel in enumerate(FILES):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"{i}\n")
    for name, target in LINKS.items():
        os.symlink(target, root / name)
    (root / ".dockerignore").write_text(ignore)
    return root


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_walk_lists_what_buildah_copies(variant, mirror, storage_root, tmp_path):
    (tmp_path / "ctx").mkdir()
    ctx = make_tree(tmp_path / "ctx", VARIANTS[variant])
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(f"FROM {mirror.host}/mirror/library/busybox:1.36\nCOPY . /ctx/\n")
    ref = f"localhost/ctx-semantics:{variant}"
    flags = [*storage_flags(storage_root), "--storage-driver", "overlay"]
    build = [*flags, "bud", "--tls-verify=false", "--layers=false", "-q", "-f", str(dockerfile), "-t", ref]
    out = subprocess.run(["buildah", *build, str(ctx)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    try:
        found = run_in_image(storage_root, ref, ["find", "/ctx", "!", "-type", "d"])
        assert found.returncode == 0, found.stderr
        copied = {line.removeprefix("/ctx/") for line in found.stdout.splitlines() if line}
        ours = set(context_files(ctx, "buildah"))
        assert set(context_files(ctx)) >= copied  # the digest covers at least what buildah copies
        assert ours == copied, f"only ours: {sorted(ours - copied)}, only buildah's: {sorted(copied - ours)}"
    finally:
        subprocess.run(["buildah", *flags, "rmi", "--force", ref], capture_output=True)
