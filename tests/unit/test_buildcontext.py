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

    from moltbuild.plan.inputs import read_ignore

    rules = read_ignore(context)
    files = []
    for dirpath, dirs, filenames in os.walk(context):
        rel_dir = Path(dirpath).relative_to(context)
        names = filenames + [d for d in dirs if (Path(dirpath) / d).is_symlink()]  # links, as links
        files += [(rel_dir / n).as_posix() for n in names if not rules.excluded((rel_dir / n).as_posix())]

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
    assert "node_modules/keep/README" in files and "docs/README.md" in files
    assert "node_modules/left-pad/index.js" not in files and "deep/a/b/c/node_modules/x.js" not in files
    assert "link-to-file" in files and "broken-link" in files and "link-to-dir" in files
    # BuildKit enters `logs` for `!**/keep.txt`, buildah does not: hashed, not sent by buildah
    assert "logs/keep.txt" in files and "logs/keep.txt" not in context_files(ctx, "buildah")


def test_ignored_folders_are_not_entered(tmp_path, monkeypatch):
    import os

    from moltbuild.plan import inputs as buildcontext

    ctx = make_context(tmp_path, {"src/a.py": "", "node_modules/m/i.js": "", "keep/x": ""}, "node_modules\n")
    entered = []
    real = os.scandir
    monkeypatch.setattr(buildcontext.os, "scandir", lambda p: entered.append(p) or real(p))
    assert context_files(ctx) == [".dockerignore", "Dockerfile", "keep/x", "src/a.py"]
    assert not [p for p in entered if "node_modules" in str(p)]


def test_a_negated_character_class_is_read_like_docker(tmp_path):
    """`[!a]` is the class of `!` and `a` for docker and buildah: app.py goes, the rest is sent."""
    files = {"api/app.py": "", "api/__init__.py": "", "api/__main__.py": "print(1)\n"}
    ctx = make_context(tmp_path, files, "api/[!a]*.py\n")
    assert context_files(ctx) == [".dockerignore", "Dockerfile", "api/__init__.py", "api/__main__.py"]
    before = digest(ctx)
    (ctx / "api/__main__.py").write_text("print(2)\n")
    assert digest(ctx) != before  # the image holds it: a change rebuilds


def test_symlinks_to_folders_and_files_are_hashed_and_packed_as_links(tmp_path):
    import io
    import os
    import tarfile

    from moltbuild.plan.inputs import context_tarball

    ctx = make_context(tmp_path, {"app/main.py": "print(1)\n", "other/x.py": ""})
    os.symlink("app", ctx / "lib")
    os.symlink("app/main.py", ctx / "main.py")
    assert context_files(ctx) == ["Dockerfile", "app/main.py", "lib", "main.py", "other/x.py"]
    before = digest(ctx)
    (ctx / "lib").unlink()
    os.symlink("other", ctx / "lib")
    assert digest(ctx) != before  # the link's target text counts
    with tarfile.open(fileobj=io.BytesIO(context_tarball(ctx, ctx / "Dockerfile"))) as tar:
        links = {m.name: m.linkname for m in tar.getmembers() if m.issym()}
    assert links == {"context/lib": "other", "context/main.py": "app/main.py"}


def test_special_files_are_refused_naming_the_path_unless_ignored(tmp_path):
    import os
    import socket

    import pytest

    from moltbuild.errors import ConfigError

    ctx = make_context(tmp_path, {"app.py": ""})
    os.mkfifo(ctx / "pipe")
    with pytest.raises(ConfigError) as err:
        digest(ctx)  # before: the walk hung opening the FIFO
    assert str(ctx / "pipe") in err.value.message and "FIFO" in err.value.message
    assert "\n" not in err.value.message
    (ctx / ".dockerignore").write_text("pipe\n")
    assert "pipe" not in context_files(ctx)
    (ctx / "pipe").unlink()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(ctx / "sock"))
        with pytest.raises(ConfigError, match=r"sock: a UNIX socket in the build context"):
            context_files(ctx)


def test_a_non_utf8_file_name_is_hashed_by_its_bytes(tmp_path):
    import io
    import os
    import tarfile

    from moltbuild.plan.inputs import context_tarball

    ctx = make_context(tmp_path, {"app.py": ""})
    name = os.fsencode(ctx) + b"/caf\xe9.txt"
    with open(name, "wb") as fh:
        fh.write(b"x")
    assert os.fsdecode(b"caf\xe9.txt") in context_files(ctx)
    first = digest(ctx)
    os.rename(name, os.fsencode(ctx) + b"/caf\xe8.txt")
    assert digest(ctx) != first
    with tarfile.open(fileobj=io.BytesIO(context_tarball(ctx, ctx / "Dockerfile"))) as tar:
        assert os.fsdecode(b"context/caf\xe8.txt") in tar.getnames()


def test_a_dockerignore_line_ending_in_a_backslash_is_refused_naming_file_and_line(tmp_path):
    import pytest

    from moltbuild.errors import ConfigError

    ctx = make_context(tmp_path, {"app.py": ""}, "*.log\nbuild\\\n")
    with pytest.raises(ConfigError, match=r"\.dockerignore:2: .*trailing `\\`"):
        digest(ctx)


def test_a_file_only_buildah_sends_is_an_input(tmp_path):
    """`x+y.txt` excludes that file for docker; buildah reads `+` as a regexp and copies it."""
    ctx = make_context(tmp_path, {"x+y.txt": "1", "app.py": ""}, "x+y.txt\n")
    assert "x+y.txt" in context_files(ctx, "buildah") and "x+y.txt" in context_files(ctx)
    before = digest(ctx)
    (ctx / "x+y.txt").write_text("2")
    assert digest(ctx) != before
