from pathlib import Path

from moltbuild.plan.inputs import context_files, input_digest


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


def reference_digest(context: Path, dockerfile: Path) -> str:
    """The straightforward definition (the code before the pruning walk): os.walk every folder,
    match every file, os.access for the exec bit; the fast walk must give the same digest."""
    import hashlib
    import json
    import os

    from moltbuild.plan.inputs import dockerignore_spec

    ignore = context / ".dockerignore"
    spec = dockerignore_spec(ignore.read_text().splitlines() if ignore.is_file() else [])
    files = []
    for dirpath, _dirs, filenames in os.walk(context):
        rel_dir = Path(dirpath).relative_to(context)
        files += [
            (rel_dir / n).as_posix() for n in filenames if not spec.match_file((rel_dir / n).as_posix())
        ]

    def file_digest(path: Path) -> str:
        if path.is_symlink():
            return hashlib.sha256(b"symlink:" + os.readlink(path).encode()).hexdigest()
        return hashlib.sha256(path.read_bytes()).hexdigest()

    h = hashlib.sha256()
    for rel in sorted(files):
        path = context / rel
        x = os.access(path, os.X_OK) and not path.is_symlink()
        h.update(f"file {rel} {'x' if x else '-'} {file_digest(path)}\n".encode())
    h.update(b"dockerfile " + file_digest(dockerfile).encode() + b"\n")
    h.update(json.dumps({"build_args": {}, "target": "", "platforms": []}, sort_keys=True).encode())
    return "sha256:" + h.hexdigest()


def tricky_tree(root: Path) -> Path:
    import os

    ctx = make_context(
        root,
        {
            "app/main.py": "print(1)\n",
            "app/__pycache__/main.cpython-311.pyc": "x",
            "node_modules/left-pad/index.js": "module.exports = 1\n",
            "node_modules/keep/README": "kept by a negation\n",
            "deep/a/b/c/node_modules/x.js": "ignored deep down\n",
            "deep/a/b/c/real.txt": "kept\n",
            "docs/guide.md": "ignored\n",
            "docs/README.md": "re-included\n",
            "build/out.bin": "ignored folder\n",
            "builder.py": "not the build folder\n",
            "logs/keep.txt": "re-included by a wildcard negation\n",
            "logs/x.log": "ignored\n",
        },
        "node_modules\n**/node_modules\n!node_modules/keep\ndocs/*\n!docs/README.md\n/build/\n"
        "**/__pycache__\nlogs\n!**/keep.txt\n",
    )
    (ctx / "empty" / "nested").mkdir(parents=True)
    (ctx / "run.sh").write_text("#!/bin/sh\n")
    (ctx / "run.sh").chmod(0o755)
    os.symlink("app/main.py", ctx / "link-to-file")
    os.symlink("app", ctx / "link-to-dir")
    os.symlink("missing", ctx / "broken-link")
    return ctx


def test_the_pruning_walk_gives_the_reference_digest_and_files(tmp_path, monkeypatch):
    from moltbuild.plan import inputs as buildcontext

    ctx = tricky_tree(tmp_path)
    expected = reference_digest(ctx, ctx / "Dockerfile")
    assert digest(ctx) == expected
    monkeypatch.setattr(buildcontext, "PARALLEL_BYTES", 0)  # the thread-pool path, same answer
    assert digest(ctx) == expected
    files = context_files(ctx)
    assert "node_modules/keep/README" in files and "logs/keep.txt" in files and "docs/README.md" in files
    assert "node_modules/left-pad/index.js" not in files and "deep/a/b/c/node_modules/x.js" not in files
    assert "link-to-file" in files and "broken-link" in files and "link-to-dir" not in files


def test_ignored_folders_are_not_entered(tmp_path, monkeypatch):
    import os

    from moltbuild.plan import inputs as buildcontext

    ctx = make_context(tmp_path, {"src/a.py": "", "node_modules/m/i.js": "", "keep/x": ""}, "node_modules\n")
    entered = []
    real = os.scandir
    monkeypatch.setattr(buildcontext.os, "scandir", lambda p: entered.append(p) or real(p))
    assert context_files(ctx) == [".dockerignore", "Dockerfile", "keep/x", "src/a.py"]
    assert not [p for p in entered if "node_modules" in str(p)]
