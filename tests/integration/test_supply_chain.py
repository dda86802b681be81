"""Supply chain with the real tools: syft and cosign against a real registry (Debian's
docker-registry: no OCI referrers API, so cosign's tag scheme). What was pushed passes a user's
own `cosign verify` / `cosign verify-attestation`; `invoke verify` passes, and fails naming the
image for another public key, an attestation moved from another digest, and a re-pushed tag.
The signing password never reaches an output, the report or a log."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest
import requests

from moltbuild.registry.client import ACCEPT
from tests.conftest import ROOT, need_tool
from tests.integration.conftest import assert_report_matches_registry, build_env, invoke, read_report

pytestmark = pytest.mark.integration

PASSWORD = "signing-canary-pw-5150"


def key_pair(folder: Path, password: str) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["cosign", "generate-key-pair"],
        cwd=folder,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "COSIGN_PASSWORD": password, "HOME": str(folder)},
        check=True,
        capture_output=True,
    )
    return folder / "cosign.key", folder / "cosign.pub"


def cosign(*args: str, home: Path, password: str = "") -> subprocess.CompletedProcess:
    """The user's own cosign, with an empty docker config: what anyone can check (`password`:
    the key's, for a user's own `cosign sign`)."""
    (home / "docker").mkdir(parents=True, exist_ok=True)
    (home / "docker" / "config.json").write_text('{"auths": {}}')
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "DOCKER_CONFIG": str(home / "docker")}
    env |= {"COSIGN_PASSWORD": password} if password else {}
    return subprocess.run(["cosign", *args], env=env, capture_output=True, text=True, timeout=120)


def payloads(stdout: str) -> list[dict]:
    return [json.loads(base64.b64decode(json.loads(line)["payload"])) for line in stdout.splitlines() if line]


def head(project: Path) -> str:
    return subprocess.run(
        ["git", "-C", str(project), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


def move_attestations(url: str, source: dict, target: dict) -> None:
    """Copy `source`'s `.att` manifest (and its blobs) onto `target`'s digest: an attestation,
    validly signed, for another image."""
    src_name, dst_name = (e["repository"].split("/", 1)[1] for e in (source, target))
    src_tag, dst_tag = (e["digest"].replace(":", "-") + ".att" for e in (source, target))
    body = requests.get(f"{url}/v2/{src_name}/manifests/{src_tag}", headers={"Accept": ACCEPT}, timeout=10)
    body.raise_for_status()
    put_manifest(url, src_name, body, dst_name, dst_tag)


def put_manifest(url: str, source: str, body: requests.Response, name: str, reference: str) -> None:
    """PUT the manifest `body` (read from repository `source`) as `name:reference`, its blobs
    mounted across first."""
    doc = body.json()
    for blob in [doc["config"], *doc["layers"]]:
        mount = f"{url}/v2/{name}/blobs/uploads/?mount={blob['digest']}&from={source}"
        assert requests.post(mount, timeout=10).status_code == 201
    put = requests.put(
        f"{url}/v2/{name}/manifests/{reference}",
        data=body.content,
        headers={"Content-Type": doc["mediaType"]},
        timeout=10,
    )
    assert put.status_code == 201, put.text


POLICY = ROOT / "docs" / "policy" / "provenance.rego"


def assert_policy(ref: str, plain: tuple[str, ...], home: Path) -> None:
    """The handbook's Rego policy admits the provenance; the same policy expecting another builder
    refuses it (cosign evaluates it, not moltbuild)."""
    kind = ("--type", "slsaprovenance1")
    admitted = cosign("verify-attestation", *plain, *kind, "--policy", str(POLICY), ref, home=home)
    assert admitted.returncode == 0, admitted.stderr
    strict = home / "strict.rego"
    strict.write_text(POLICY.read_text().replace('"urn:moltbuild:builder:"', '"urn:elsewhere:"'))
    refused = cosign("verify-attestation", *plain, *kind, "--policy", str(strict), ref, home=home)
    assert refused.returncode != 0 and "validation errors occurred" in refused.stderr, refused.stderr


def assert_bases_by_mirror_digest(statement: dict, mirror_url: str) -> None:
    """Docker Hub bases (pulled through MOLTBUILD_BASE_MIRROR) are purls with the digest the
    mirror serves for their tag."""
    bases = [d for d in statement["predicate"]["buildDefinition"]["resolvedDependencies"] if "name" in d]
    assert bases, statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    for dep in bases:
        name, tag = dep["name"].split(":")
        served = requests.head(
            f"{mirror_url}/v2/mirror/library/{name}/manifests/{tag}", headers={"Accept": ACCEPT}, timeout=10
        ).headers["Docker-Content-Digest"]
        assert dep["digest"] == {"sha256": served.removeprefix("sha256:")}
        assert dep["uri"].startswith(f"pkg:docker/library/{name}@{served}?repository_url=docker.io")


def assert_sbom_names_the_pushed_image(doc: dict, entry: dict, registry_url: str) -> None:
    """An SBOM made from the built image's filesystem before the push names the repository and
    the image's config digest, which the pushed manifest references (the registry is read)."""
    assert doc["packages"], "an SBOM that lists packages"
    (described,) = [
        r["relatedSpdxElement"] for r in doc["relationships"] if r["relationshipType"] == "DESCRIBES"
    ]
    root = next(p for p in doc["packages"] if p["SPDXID"] == described)
    assert doc["name"] == root["name"] == entry["repository"]
    name = entry["repository"].split("/", 1)[1]
    manifest = requests.get(
        f"{registry_url}/v2/{name}/manifests/{entry['digest']}", headers={"Accept": ACCEPT}, timeout=10
    ).json()
    assert (
        root["versionInfo"]
        == manifest["config"]["digest"]
        == f"sha256:{entry['image_id'].removeprefix('sha256:')}"
    )


def test_signed_images_pass_cosign_and_invoke_verify(git_project, mirror, storage_root, tmp_path):
    need_tool("cosign", "syft")
    key, pub = key_pair(tmp_path / "keys", PASSWORD)
    other_key, other_pub = key_pair(tmp_path / "other", "another-password")
    env = build_env(
        mirror,
        storage_root,
        "signed",
        MOLTBUILD_ATTEST="on",
        MOLTBUILD_SIGNING_KEY=str(key),
        MOLTBUILD_SIGNING_PASSWORD=PASSWORD,
    )
    built = invoke(git_project, "build", "--push", "--no-smoke", env=env)
    assert built.returncode == 0, built.stdout + built.stderr
    entries = assert_report_matches_registry(git_project, mirror.url, {"api", "frontend"})
    commit = head(git_project)
    for entry in entries.values():
        ref = f"{entry['repository']}@{entry['digest']}"
        assert entry["signature"] == f"{entry['repository']}:{entry['digest'].replace(':', '-')}.sig"
        plain = ("--allow-http-registry", "--insecure-ignore-tlog=true", "--key", str(pub))
        signed = cosign("verify", *plain, ref, home=tmp_path)
        assert signed.returncode == 0, signed.stderr
        proven = cosign("verify-attestation", *plain, "--type", "slsaprovenance1", ref, home=tmp_path)
        assert proven.returncode == 0, proven.stderr
        (statement,) = payloads(proven.stdout)
        assert statement["subject"][0]["digest"]["sha256"] == entry["digest"].removeprefix("sha256:")
        source = statement["predicate"]["buildDefinition"]["externalParameters"]["source"]
        assert source["commit"] == commit and source["dirty"] is False
        assert_bases_by_mirror_digest(statement, mirror.url)
        assert_policy(ref, plain, tmp_path)
        sbom = cosign("verify-attestation", *plain, "--type", "spdxjson", ref, home=tmp_path)
        assert sbom.returncode == 0, sbom.stderr
        assert_sbom_names_the_pushed_image(payloads(sbom.stdout)[0]["predicate"], entry, mirror.url)
    # buildah's images were scanned from their mounted filesystems while they were pushed
    assert built.stdout.count("read from its local filesystem, before the push") == 2, built.stdout

    verify_env = {**env, "MOLTBUILD_VERIFY_KEY": str(pub)}
    verified = invoke(git_project, "verify", env=verify_env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    wrong = invoke(git_project, "verify", env={**env, "MOLTBUILD_VERIFY_KEY": str(other_pub)})
    assert wrong.returncode != 0
    assert "moltbook-api" in wrong.stderr and f"no signature by the key {other_pub}" in wrong.stderr

    again = invoke(git_project, "build", "--push", "--no-smoke", env=env)  # reused: already signed
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("already attested") == 2
    assert {n: e["signature"] for n, e in read_report(git_project).items()} == {
        n: e["signature"] for n, e in entries.items()
    }

    move_attestations(mirror.url, entries["api"], entries["frontend"])
    moved = invoke(git_project, "verify", env=verify_env)
    assert moved.returncode != 0
    line = next(x for x in moved.stdout.splitlines() if "moltbook-frontend" in x and "unattested" in x)
    assert "provenance" in line and "subject digest" in line  # cosign's own check says it first

    rotated = {
        **env,
        "MOLTBUILD_SIGNING_KEY": str(other_key),
        "MOLTBUILD_SIGNING_PASSWORD": "another-password",
    }
    resigned = invoke(git_project, "build", "--push", "--no-smoke", env=rotated)  # a new key signs again
    assert resigned.returncode == 0 and "already attested" not in resigned.stdout, resigned.stdout
    after_rotation = invoke(git_project, "verify", env={**env, "MOLTBUILD_VERIFY_KEY": str(other_pub)})
    assert after_rotation.returncode == 0, after_rotation.stdout + after_rotation.stderr

    logs = [p.read_text(errors="replace") for p in (git_project / "build").rglob("*") if p.is_file()]
    for text in [built.stdout, built.stderr, again.stdout, again.stderr, *logs]:
        assert PASSWORD not in text


def test_without_a_key_attachments_are_unsigned_and_tampering_still_shows(git_project, mirror, storage_root):
    need_tool("cosign", "syft")
    env = build_env(mirror, storage_root, "unsigned", MOLTBUILD_ATTEST="auto")
    built = invoke(git_project, "build", "--push", "--no-smoke", env=env)
    assert built.returncode == 0, built.stdout + built.stderr
    assert "not signed: no MOLTBUILD_SIGNING_KEY" in built.stdout
    entries = read_report(git_project)
    assert {e["signature"] for e in entries.values()} == {"unsigned"}
    assert built.stdout.count("SBOM + provenance attached UNSIGNED") == 2

    verified = invoke(git_project, "verify", env=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    rows = [x for x in verified.stdout.splitlines() if "not signed; provenance and SBOM attached" in x]
    assert {"moltbook-api", "moltbook-frontend"} <= {n for x in rows for n in x.split("/")[-1].split(":")[:1]}
    assert all(" unsigned " in x for x in rows)  # every tag's row says unsigned, none says ok
    assert (
        verified.stdout.strip().splitlines()[-1].startswith("signatures not checked: no MOLTBUILD_VERIFY_KEY")
    )
    required = invoke(
        git_project, "verify", env={**env, "MOLTBUILD_ATTEST": "on"}
    )  # the policy: now it fails
    assert required.returncode != 0 and "requires a signature" in required.stderr

    move_attestations(mirror.url, entries["api"], entries["frontend"])
    moved = invoke(git_project, "verify", env=env)
    assert moved.returncode != 0
    line = next(x for x in moved.stdout.splitlines() if "moltbook-frontend" in x and "unattested" in x)
    assert "the provenance is for another digest" in line

    api = entries["api"]
    name = api["repository"].split("/", 1)[1]
    busybox = requests.get(
        f"{mirror.url}/v2/mirror/library/busybox/manifests/1.36", headers={"Accept": ACCEPT}, timeout=10
    )
    put_manifest(mirror.url, "mirror/library/busybox", busybox, name, api["pin_tag"])  # the tag re-pushed
    after = invoke(git_project, "verify", env=env)
    assert after.returncode != 0
    line = next(x for x in after.stdout.splitlines() if f"moltbook-api:{api['pin_tag']}" in x)
    assert "mismatch" in line


def test_invoke_push_attests_what_an_earlier_build_made(git_project, mirror, storage_root, tmp_path):
    need_tool("cosign", "syft")
    key, pub = key_pair(tmp_path / "keys", PASSWORD)
    env = build_env(
        mirror, storage_root, "later", MOLTBUILD_SIGNING_KEY=str(key), MOLTBUILD_SIGNING_PASSWORD=PASSWORD
    )
    env.pop("MOLTBUILD_ATTEST")  # the default: auto
    built = invoke(git_project, "build", "--only", "api", "--no-smoke", env=env)
    assert built.returncode == 0, built.stdout + built.stderr
    assert read_report(git_project)["api"]["signature"] == ""  # nothing pushed, nothing attested
    pushed = invoke(git_project, "push", env=env)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    entry = read_report(git_project)["api"]
    assert entry["signature"].endswith(".sig") and entry["provenance"].endswith(".att")
    proven = cosign(
        "verify-attestation",
        "--allow-http-registry",
        "--insecure-ignore-tlog=true",
        "--key",
        str(pub),
        "--type",
        "slsaprovenance1",
        f"{entry['repository']}@{entry['digest']}",
        home=tmp_path,
    )
    assert proven.returncode == 0, proven.stderr
    (statement,) = payloads(proven.stdout)
    params = statement["predicate"]["buildDefinition"]["externalParameters"]
    assert params["dockerfile"] == "api/Dockerfile" and params["source"]["commit"] == head(git_project)
    verified = invoke(git_project, "verify", env={**env, "MOLTBUILD_VERIFY_KEY": str(pub)})
    assert verified.returncode == 0, verified.stdout + verified.stderr
