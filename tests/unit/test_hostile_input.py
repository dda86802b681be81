"""Hostile or huge input: alias bombs, large kustomizations, links, short secrets, duplicate or
deep report records, garbage from GitHub, a full disk. Each fails fast with one line naming
the file (or URL) and the fix, never a traceback."""

import os
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from moltbuild.errors import ConfigError
from moltbuild.files import load_yaml, write_atomic
from moltbuild.k8s.kustomize import Pin, edited, set_images
from moltbuild.system.processes import Runner

ROOT = Path(__file__).resolve().parents[2]
API = "ghcr.io/ardenone/moltbook-api"
D1 = "sha256:" + "1" * 64
BOMB = "".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" if i else 'l0: &l0 ["lol", "lol"]\n' for i in range(12)
)


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)


def runner() -> Runner:
    return Runner(out=lambda _: None, environ=dict(os.environ))


def kustomization() -> str:
    return (ROOT / "k8s" / "kustomization.yml").read_text()


# -- YAML ----------------------------------------------------------------------------------------


def test_an_alias_bomb_is_refused_before_any_expansion_naming_file_and_line(tmp_path, monkeypatch):
    path = tmp_path / "kustomization.yml"
    path.write_text(kustomization() + BOMB)
    sizes = round_trip_bytes(monkeypatch)
    with pytest.raises(ConfigError, match=rf"^{path}:\d+: YAML aliases \(\*l0\) are not accepted") as exc:
        set_images(path, [Pin(API, API, "t", None)], runner=runner())
    assert sizes == [] and "\n" not in str(exc.value)  # refused from the event scan: nothing built
    line = int(str(exc.value).split(":")[1])
    assert "*l0" in path.read_text().splitlines()[line - 1]
    with pytest.raises(ConfigError, match=r"manifest.yml:2: YAML aliases"):
        load_yaml(tmp_path / "manifest.yml", text="a: &x 1\nb: *x\n", multi=True)


def test_a_yaml_file_over_the_cap_is_refused_with_its_size(tmp_path):
    path = tmp_path / "big.yml"
    path.write_text("a: " + "x" * (9 * 1024 * 1024) + "\n")
    too_large = rf"^{path}: \d+ bytes is too large for a YAML file \(at most 8 MiB\); split it"
    with pytest.raises(ConfigError, match=too_large):
        load_yaml(path)
    with pytest.raises(ConfigError, match="too large"):
        load_yaml(path, text=path.read_text())


def round_trip_bytes(monkeypatch) -> list[int]:
    """What the slow round-trip parser is given, call by call: speed comes from giving it little
    (the rest of the file is scanned once, in C). Asserted on instead of a time, which a loaded
    machine or coverage tracing would make flaky."""
    from moltbuild.k8s import kustomize

    sizes: list[int] = []
    real = kustomize._edited

    def spy(path, text, pins):
        sizes.append(len(text))
        return real(path, text, pins)

    monkeypatch.setattr(kustomize, "_edited", spy)
    return sizes


@pytest.mark.parametrize("where", ["resources", "no-images"])
def test_a_2mb_kustomization_is_pinned_parsing_only_its_images_block(tmp_path, where, monkeypatch):
    extra = "".join(f"  - res/deployment-{i}.yml  # comment {i}\n" for i in range(45000))
    text = kustomization().replace("resources:\n", "resources:\n" + extra)
    if where == "no-images":
        text = text[: text.index("# Pinned")] + "# trailing comment\n"
    assert len(text) > 2_000_000
    path = tmp_path / "kustomization.yml"
    sizes = round_trip_bytes(monkeypatch)
    new, changed = edited(path, text, [Pin(API, "r.example/api", "t1", D1)])
    assert sizes and sum(sizes) < 2_000  # the images block only: before, all 2 MB (85 s)
    assert changed and new.startswith(text[: text.index("images:") if "images:" in text else -30])
    doc = YAML(typ="safe").load(new)
    entry = next(e for e in doc["images"] if e["name"] == API)
    assert entry == {"name": API, "newName": "r.example/api", "newTag": "t1", "digest": D1}
    assert len(doc["resources"]) == 45003
    if where == "no-images":
        assert new.endswith("# trailing comment\n") and new.index("images:") < new.index("# trailing")


def test_a_last_line_without_newline_and_crlf_stay_as_they_were(tmp_path):
    text = "resources:\r\n- a.yml\r\nimages:\r\n- name: a.io/x\r\n  newTag: old"
    new, _ = edited(tmp_path / "k.yml", text, [Pin("a.io/x", "a.io/x", "new", None)])
    kept = "resources:\r\n- a.yml\r\nimages:\r\n- name: a.io/x\r\n"
    assert new == kept + "  newTag: new\r\n  newName: a.io/x\r\n"
    assert YAML(typ="safe").load(new)["images"][0]["newTag"] == "new"


# -- a linked kustomization ----------------------------------------------------------------------


def test_a_linked_kustomization_pins_its_target_and_stays_a_link(tmp_path):
    (tmp_path / "base").mkdir()
    target = tmp_path / "base" / "kustomization.yml"
    target.write_text(kustomization())
    link = tmp_path / "kustomization.yml"
    link.symlink_to("base/kustomization.yml")
    for name in ("namespace.yml", "api.yml", "frontend.yml"):  # kustomize reads them beside the link
        (tmp_path / name).write_text((ROOT / "k8s" / name).read_text())
    set_images(link, [Pin(API, "r.example/api", "t9", None)], runner=runner(), root=tmp_path)
    assert link.is_symlink() and os.readlink(link) == "base/kustomization.yml"
    assert "newTag: t9" in target.read_text()


def test_a_link_out_of_the_repository_is_refused_naming_it(tmp_path):
    outside = tmp_path / "elsewhere.yml"
    outside.write_text(kustomization())
    (tmp_path / "repo").mkdir()
    link = tmp_path / "repo" / "kustomization.yml"
    link.symlink_to(outside)
    with pytest.raises(ConfigError, match=rf"^{link} is a link to {outside}, outside the repository"):
        set_images(link, [Pin(API, "r.example/api", "t9", None)], runner=runner(), root=tmp_path / "repo")
    assert outside.read_text() == kustomization() and link.is_symlink()


# -- a full disk ---------------------------------------------------------------------------------


def test_a_full_disk_names_the_path_and_the_fix(tmp_path, monkeypatch):
    import errno

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    path = tmp_path / "build" / "images.json"
    with pytest.raises(ConfigError, match=rf"^{path}: cannot write \(the disk is full\); free space"):
        write_atomic(path, "{}")
    assert list(path.parent.iterdir()) == []  # no temporary file left behind


# -- short and common secrets --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("secret", "text", "shown"),
    [
        ("k", "kaniko built api", "kaniko built api"),  # too short: masking it would mask every k
        ("abc", "abc:abc", "abc:abc"),
        ("moltbook", "pushed ghcr.io/x/moltbook-api", "pushed ghcr.io/x/****-api"),
        ("s3cr3t-token", "login with s3cr3t-token ok", "login with **** ok"),
        ("abcd", "abcd", "****"),
    ],
)
def test_masking_covers_secrets_of_four_characters_or_more(secret, text, shown):
    from moltbuild.system.console import MASK, Console, mask_known_secrets

    console = Console(secrets=[secret], out=lambda _: None)
    assert console.mask(text) == shown.replace("****", MASK)
    if len(secret) < 4:
        assert mask_known_secrets(text) == text


@pytest.mark.parametrize(
    ("arg", "refused"),
    [
        # The argument is the secret, or carries it whole as a value: refused.
        ("moltbook", True),
        ("--password=moltbook", True),
        ("--build-arg=REGISTRY_TOKEN=moltbook", True),
        ("--label=org.opencontainers.image.title=moltbook", True),  # KEY=SECRET, whatever the key
        ("APP_NAME='moltbook'", True),
        ("user:moltbook", True),
        ("--creds=user:moltbook", True),
        ("https://user:moltbook@ghcr.io/v2/", True),
        ("https://moltbook@github.com/o/r.git", True),
        ("Authorization: Bearer moltbook", True),
        ("echo 'moltbook' | login", True),
        ("echo moltbook | docker login --password-stdin", True),
        ("login -u me --password moltbook", True),
        # The secret's text inside a path, tag, sha, name or sentence: no guess, passed.
        ("/work/moltbook/api", False),
        ("ghcr.io/ardenone/moltbook-api:sha-abc1234", False),
        ("ghcr.io/ardenone/api:moltbook-1", False),
        ("ghcr.io/ardenone/api:moltbook", False),
        ("ghcr.io/x/moltbook@sha256:" + "1" * 64, False),
        ("--label=org.opencontainers.image.source=https://github.com/acme/moltbook", False),
        ("--label=org.opencontainers.image.revision=4eb809a4b5moltbook072abf", False),
        ("moltbook-frontend", False),
        ("refs/heads/moltbook", False),
        ("pin moltbook images to sha-abc1234", False),
    ],
)
def test_argv_is_refused_only_when_it_passes_the_secret_as_a_value(arg, refused):
    from moltbuild.errors import CommandError

    # A dry run: the guard runs first, and nothing starts.
    run = Runner(secrets=["moltbook"], out=lambda _: None, environ={}, dry_run=True)
    if refused:
        with pytest.raises(CommandError, match="refusing to pass a secret in argv") as exc:
            run.run(["true", arg])
        assert "moltbook" not in str(exc.value)
    else:
        assert run.run(["true", arg]).ok


def test_a_secret_that_reads_like_a_branch_is_refused_only_as_a_value():
    from moltbuild.errors import CommandError

    run = Runner(secrets=["main"], out=lambda _: None, environ={}, dry_run=True)
    for arg in ("/work/main/api", "ghcr.io/acme/api:main", "--label=ref=refs/heads/main"):
        assert run.run(["buildah", "push", arg]).ok
    for arg in ("--password=main", "main"):
        with pytest.raises(CommandError, match="refusing to pass a secret in argv"):
            run.run(["buildah", "login", arg])


def test_a_secret_too_short_to_mask_is_said_once(tmp_path, capsys):
    from moltbuild.flows.context import warn_short_secrets
    from moltbuild.settings import load_settings
    from moltbuild.system import state

    (tmp_path / "pyproject.toml").write_text("[tool.moltbuild]\n")
    settings = load_settings(tmp_path, environ={"REGISTRY_PASSWORD": "ab"})
    state._said.discard("short secret REGISTRY_PASSWORD")
    warn_short_secrets(settings, runner())
    warn_short_secrets(settings, runner())
    err = capsys.readouterr().err
    expected = "warning: REGISTRY_PASSWORD is shorter than 4 characters: it cannot be masked in output\n"
    assert err == expected


# -- the build report ----------------------------------------------------------------------------


def test_two_records_of_one_image_are_refused_naming_file_and_image(tmp_path):
    import json

    from moltbuild import report
    from tests.unit.records import pushed_entry

    path = tmp_path / "images.json"
    entries = [pushed_entry("api"), pushed_entry("web"), pushed_entry("api", tags=["sha-other"])]
    path.write_text(json.dumps({"version": report.VERSION, "images": entries}))
    expected = rf"^{path}: two records of the image 'api'; fix it or delete"
    with pytest.raises(ConfigError, match=expected) as exc:
        report.read(path)
    assert "\n" not in str(exc.value)


def test_a_deeply_nested_report_is_one_line_naming_it(tmp_path):
    from moltbuild import report

    path = tmp_path / "images.json"
    path.write_text('{"version": 1, "images": ' + "[" * 100000 + "]" * 100000 + "}")
    expected = rf"^{path}: nested too deeply for a build report; fix it or delete"
    with pytest.raises(ConfigError, match=expected):
        report.read(path)


def test_a_deeply_nested_yaml_file_is_one_line_naming_it(tmp_path):
    path = tmp_path / "deep.yml"
    path.write_text("kind: x\na: " + "[" * 100000 + "]" * 100000 + "\n")  # crashed the C loader
    with pytest.raises(ConfigError, match=rf"^{path}:2: nested more than 100 levels deep; flatten it"):
        load_yaml(path)
    path.write_text("a:\n" + "".join(" " * i + "- \n" for i in range(1, 300)))
    with pytest.raises(ConfigError, match=rf"^{path}:\d+: nested more than 100 levels deep"):
        load_yaml(path, typ="rt")


# -- a full disk ---------------------------------------------------------------------------------


def test_a_full_report_folder_names_the_report(tmp_path, monkeypatch):
    import errno

    from moltbuild import report
    from tests.unit.records import image_record, pushed_entry

    real = os.fdopen

    def full(fd, *args, **kwargs):
        fh = real(fd, *args, **kwargs)
        fh.write = lambda _text: (_ for _ in ()).throw(OSError(errno.EDQUOT, "Disk quota exceeded"))
        return fh

    monkeypatch.setattr(os, "fdopen", full)
    path = tmp_path / "build" / "images.json"
    expected = rf"^{path}: cannot write \(the disk quota is reached\); free space"
    with pytest.raises(ConfigError, match=expected):
        report.update(path, image_record(pushed_entry("api")))


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
def test_a_build_log_on_a_full_disk_names_the_log_after_the_command_ran(tmp_path):
    marker = tmp_path / "ran-to-the-end"
    run = Runner(out=lambda _: None, environ={"PATH": os.environ["PATH"]})
    script = f"for i in $(seq 1 20000); do echo line $i; done; touch {marker}"
    with pytest.raises(ConfigError, match=r"^/dev/full: cannot write \(the disk is full\); free space"):
        run.stream(["sh", "-c", script], log_path=Path("/dev/full"))
    assert marker.exists()  # the command was read to its end, not left blocked on a full pipe


# -- GitHub answering garbage with 200 -----------------------------------------------------------

GH_TOKEN = "canary-hostile-input-token-0123456789"


@pytest.mark.parametrize(
    ("call", "uri", "answer", "expected"),
    [
        (
            "runs",
            "/repos/o/r/actions/workflows/build-images.yml/runs",
            "<html>login</html>",
            "got no JSON (text/html",
        ),
        ("runs", "/repos/o/r/actions/workflows/build-images.yml/runs", [1, 2], "got a JSON list"),
        (
            "runs",
            "/repos/o/r/actions/workflows/build-images.yml/runs",
            {"workflow_runs": [{"x": 1}]},
            "an id",
        ),
        ("runs", "/repos/o/r/actions/workflows/build-images.yml/runs", {"workflow_runs": "many"}, "an id"),
        ("run", "/repos/o/r/actions/runs/7", {"status": "completed"}, "run 7 with an integer id"),
        ("run", "/repos/o/r/actions/runs/7", "[" * 100000, "got no JSON"),
        ("jobs", "/repos/o/r/actions/runs/7/jobs", {"jobs": [{"id": 1, "steps": [1]}]}, "steps"),
        ("dispatch", "/repos/o/r/actions/workflows/build-images.yml/dispatches", [], "got a JSON list"),
        (
            "dispatch",
            "/repos/o/r/actions/workflows/build-images.yml/dispatches",
            {"workflow_run_id": "x"},
            "integer",
        ),
    ],
)
def test_github_garbage_with_200_is_one_line_naming_the_url(httpserver_ipv4, call, uri, answer, expected):
    from moltbuild.ci.github import GitHub, GitHubError
    from moltbuild.settings import Secret

    method = "POST" if call == "dispatch" else "GET"
    if isinstance(answer, str):
        httpserver_ipv4.expect_request(uri, method=method).respond_with_data(answer, content_type="text/html")
    else:
        httpserver_ipv4.expect_request(uri, method=method).respond_with_json(answer)
    gh = GitHub(httpserver_ipv4.url_for(""), "o/r", Secret(GH_TOKEN))
    calls = {
        "runs": lambda: gh.runs("build-images.yml"),
        "run": lambda: gh.run(7),
        "jobs": lambda: gh.jobs(7),
        "dispatch": lambda: gh.dispatch("build-images.yml", "main", {}),
    }
    with pytest.raises(GitHubError) as exc:
        calls[call]()
    message = str(exc.value)
    assert message.startswith(httpserver_ipv4.url_for(uri) + ": expected ") and expected in message
    assert "\n" not in message and GH_TOKEN not in message and "MOLTBUILD_GITHUB_API" in message


def test_a_2mb_images_list_is_pinned_parsing_only_the_entries_it_changes(monkeypatch):
    extra = "".join(f"  - name: example.com/img{i}  # {i}\n    newTag: v{i}\n" for i in range(35000))
    text = kustomization().replace("images:\n", "images:\n" + extra)
    assert len(text) > 2_000_000
    pins = [Pin(API, "r.example/api", "t1", D1), Pin("example.com/img17", "r.example/i", "t2", None)]
    sizes = round_trip_bytes(monkeypatch)
    new, changed = edited(Path("k.yml"), text, [*pins, Pin("new.example/x", "r.example/x", "t3", None)])
    assert len(sizes) == 3 and sum(sizes) < 1_000  # the changed entries and the last: not 2 MB
    assert [line.split(" -> ")[0] for line in changed] == [API, "example.com/img17", "new.example/x"]
    images = {e["name"]: e for e in YAML(typ="safe").load(new)["images"]}
    assert images["example.com/img17"] == {
        "name": "example.com/img17",
        "newTag": "t2",
        "newName": "r.example/i",
    }
    assert images["example.com/img18"] == {"name": "example.com/img18", "newTag": "v18"}
    assert list(images)[-1] == "new.example/x" and len(images) == 35003


@pytest.mark.parametrize(
    "text",
    [
        "images:\n- name: a.io/x\n  newTag: 1\n- name: a.io/x  # twice\n  newTag: 2\n",
        "images:\n  - name: b.io/y\n  # between\n  - name: a.io/x\n    digest: sha256:"
        + "3" * 64
        + "\n# end\n",
        "images:\n  - {name: a.io/x, newTag: old}\n  - name: b.io/y\n",
        "images: [{name: a.io/x}]\nresources: [a.yml]\n",
        "resources:\n- a.yml\nimages:\n  - newTag: old\n    name: a.io/x\n    newName: a.io/x\nkind: K\n",
        "images:\n  -\n    name: a.io/x\n  - name: c.io/z\n",
    ],
)
def test_editing_entry_by_entry_gives_the_same_text_as_editing_the_whole_file(text):
    from moltbuild.k8s import kustomize

    pins = [Pin("a.io/x", "r.io/x", "new", D1), Pin("z.io/new", "r.io/new", "1.0", None)]
    assert edited(Path("k.yml"), text, pins) == kustomize._edited(Path("k.yml"), text, pins)
