from pathlib import Path

from moltbuild.buildcontext import context_files, input_digest


def make_context(root: Path, files: dict[str, str], ignore: str = "") -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    if ignore:
        (root / ".dockerignore").write_text(ignore)
    (root / "Dockerfile").write_text("FROM scratch\n")
    return root


def test_dockerignore_is_anchored_and_supports_negation(tmp_path):
    ctx = make_context(
        tmp_path,
        {
            "a.pyc": "",
            "pkg/b.pyc": "",
            "pkg/keep.py": "",
            "tests/t.py": "",
            "docs/x.md": "",
            "docs/README.md": "",
        },
        "*.pyc\ntests/\ndocs/*\n!docs/README.md\n# comment\n",
    )
    assert context_files(ctx) == [".dockerignore", "Dockerfile", "docs/README.md", "pkg/b.pyc", "pkg/keep.py"]


def digest(ctx: Path, **kw) -> str:
    args = {"build_args": {}, "target": None, "platforms": []} | kw
    return input_digest(ctx, ctx / "Dockerfile", args["build_args"], args["target"], args["platforms"])


def test_input_digest_tracks_what_decides_the_image(tmp_path):
    ctx = make_context(tmp_path, {"app.py": "print(1)\n", "ignored.log": "x"}, "*.log\n")
    base = digest(ctx)
    assert digest(ctx) == base  # stable
    (ctx / "ignored.log").write_text("changed")
    assert digest(ctx) == base  # ignored files do not count
    assert digest(ctx, build_args={"A": "1"}) != base
    assert digest(ctx, target="final") != base
    assert digest(ctx, platforms=["linux/arm64"]) != base
    (ctx / "app.py").chmod(0o755)
    assert digest(ctx) != base  # the exec bit changes the image
    (ctx / "app.py").chmod(0o644)
    (ctx / "Dockerfile").write_text("FROM scratch\nUSER 1\n")
    assert digest(ctx) != base
