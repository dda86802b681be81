from pathlib import Path

import pytest

from moltbuild.errors import ConfigError, RegistryError
from moltbuild.flows.verify import deployed_targets
from moltbuild.plan.planner import cache_tag
from moltbuild.refs import is_loopback
from moltbuild.registry import verify as registry_verify
from moltbuild.registry.auth import Registries
from moltbuild.registry.client import RegistryClient
from moltbuild.registry.promote import destination, parse_source
from moltbuild.registry.verify import Check, raise_on_failure, render
from moltbuild.settings import Secret


def deploying(folder: Path, images: str, *running: str) -> Path:
    """A kustomization with `images` (its `images:` block) over Deployments running `running`."""
    docs = [
        f"apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: w{i}}}\n"
        f"spec: {{template: {{spec: {{containers: [{{name: c, image: '{image}'}}]}}}}}}\n"
        for i, image in enumerate(running)
    ]
    (folder / "workloads.yml").write_text("---\n".join(docs))
    path = folder / "kustomization.yml"
    path.write_text("resources: [workloads.yml]\n" + images)
    return path


def test_kustomization_targets_are_what_kustomize_renders(tmp_path: Path):
    path = deploying(
        tmp_path,
        "images:\n"
        "  - name: ghcr.io/ardenone/moltbook-api\n    newTag: sha-abc1234\n"
        "  - name: ghcr.io/ardenone/moltbook-frontend\n    newName: reg:5000/ns/fe\n"
        "    digest: sha256:" + "1" * 64 + "\n"
        "  - name: nginx\n"
        "  - name: ghcr.io/ardenone/short\n    newTag: 0012345\n",
        "ghcr.io/ardenone/moltbook-api:latest",
        "ghcr.io/ardenone/moltbook-frontend",
        "nginx",
        "ghcr.io/ardenone/short:1",
        "docker.io/library/nginx:1.27",  # no entry: `nginx` is not this name to kustomize
    )
    api, fe, nginx, short, hub = deployed_targets(path, set())
    assert (api.origin, api.ref.name, api.ref.reference) == (
        f"{path} images[0]",
        "ghcr.io/ardenone/moltbook-api",
        "sha-abc1234",
    )
    assert (fe.ref.name, fe.ref.reference, fe.expected) == (
        "reg:5000/ns/fe",
        "sha256:" + "1" * 64,
        "sha256:" + "1" * 64,
    )
    assert (nginx.ref.name, nginx.ref.reference, nginx.expected) == (
        "docker.io/library/nginx",
        "latest",
        None,
    )
    assert short.ref.tag == "0012345"  # a short sha is a string, not the number 12345
    assert (hub.origin, hub.ref.tag, hub.unpinned) == (str(tmp_path / "workloads.yml"), "1.27", "")


def test_an_image_of_ours_no_entry_pins_is_not_pinned(tmp_path: Path):
    """Such an entry said "pinned" and verify checked it, while `:latest` was deployed."""
    path = deploying(tmp_path, "images:\n  - name: ghcr.io/ardenone/api\n    newTag: sha-1\n", "ardenone/api")
    (target,) = deployed_targets(path, {"docker.io/ardenone/api"})
    check = registry_verify.check(target, None)
    assert (
        check.verdict == "not-pinned"
        and "matches ardenone/api (kustomize matches the name exactly)" in check.reason
    )


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("images: [\n", "kustomization.yml:"),
        ("images: {a: 1}\n", "must be a list"),
        ("images:\n  - newTag: x\n", "images[0] needs a `name`"),
        (
            "images:\n  - name: a.io/x\n    digest: sha256:00\n",
            "kustomization.yml: images[0] 'a.io/x@sha256:00' is not",
        ),
    ],
)
def test_bad_kustomization_names_the_file(tmp_path, text, fragment):
    path = deploying(tmp_path, text, "a.io/x")
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        deployed_targets(path, set())


def test_failures_are_rendered_and_raised_with_the_first_reason():
    checks = [
        Check("report", "api", "r/a:1", "sha256:1", "sha256:1", "ok", ""),
        Check("k.yml", "fe", "r/f:never", "(exists)", "-", "missing", "the registry has no such tag"),
    ]
    assert "missing" in render(checks) and '"ok": false' in render(checks, as_json=True)
    with pytest.raises(RegistryError, match=r"1 of 2 checks failed; first: r/f:never \(k.yml\): missing"):
        raise_on_failure(checks)


@pytest.mark.parametrize(
    "ref, parts",
    [
        ("ghcr.io/ardenone/moltbook-api:sha-abc1234", ("ghcr.io", "ardenone/moltbook-api", "sha-abc1234")),
        ("127.0.0.1:5000/a/b@sha256:" + "f" * 64, ("127.0.0.1:5000", "a/b", "sha256:" + "f" * 64)),
    ],
)
def test_parse_source(ref, parts):
    src = parse_source(ref)
    assert (src.host, src.repository, src.reference) == parts


@pytest.mark.parametrize("bad", ["ardenone/moltbook-api:x", "ghcr.io/ardenone/moltbook-api", "ghcr.io/A/b:1"])
def test_parse_source_needs_host_and_tag(bad):
    with pytest.raises(ConfigError, match="--source"):
        parse_source(bad)


@pytest.mark.parametrize(
    "tag, dest",
    [
        ("rc1", "ghcr.io/ardenone/api:rc1"),
        ("ardenone/promoted:v1", "ghcr.io/ardenone/promoted:v1"),
        ("ghcr.io/other/app:v2", "ghcr.io/other/app:v2"),
    ],
)
def test_destination_stays_on_the_source_registry(tag, dest):
    assert str(destination(parse_source("ghcr.io/ardenone/api:sha-abc1234"), tag)) == dest
    with pytest.raises(ConfigError, match="across registries"):
        destination(parse_source("ghcr.io/ardenone/api:x"), "quay.io/a/b:1")


@pytest.mark.parametrize(
    "host, loop",
    [
        ("127.0.0.1:5000", True),
        ("localhost:80", True),
        ("[::1]:5000", True),
        ("ghcr.io", False),
        ("10.0.0.1:5000", False),
    ],
)
def test_is_loopback(host, loop):
    assert is_loopback(host) is loop


def test_credentials_only_over_https_unless_insecure_listed_or_loopback():
    creds = {"username": "u", "password": Secret("p")}
    remote = RegistryClient("reg.example:5000", **creds)
    assert remote.base.startswith("https://")
    assert not remote._can_send_credentials("http://reg.example:5000/token")
    listed = RegistryClient("reg.example:5000", insecure_hosts=["reg.example:5000"], **creds)
    assert listed.base.startswith("http://") and listed._can_send_credentials("http://reg.example:5000/v2/")
    assert RegistryClient("127.0.0.1:5000", **creds)._can_send_credentials("http://127.0.0.1:9/token")


def test_cache_tag_is_a_valid_tag_derived_from_the_input_digest():
    tag = cache_tag("sha256:" + "ab" * 32)
    assert tag == "input-" + "ab" * 16 and len(tag) <= 128


def test_an_image_meant_to_be_pushed_and_not_pushed_fails_verify(tmp_path: Path):
    import json

    from moltbuild.registry.verify import verify
    from moltbuild.settings import load_settings
    from tests.unit.records import raw_entry

    path = tmp_path / "images.json"
    failed = raw_entry("api", push=True, status="built", error="push of reg/x:sha-1 failed: HTTP 500\nlog")
    built_only = raw_entry("frontend")  # built without --push: nothing to check
    path.write_text(json.dumps({"version": 1, "images": [failed, built_only]}))
    s = load_settings(tmp_path, environ={}, tool_config={})
    checks = verify(s, report_path=path, registries=Registries(s))
    assert [(c.image, c.verdict) for c in checks] == [("api", "not-pushed")]
    assert "push of reg/x:sha-1 failed: HTTP 500" in checks[0].reason and "invoke push" in checks[0].reason
    with pytest.raises(RegistryError, match=r"never was"):
        raise_on_failure(checks)


def test_verify_hashes_what_the_registry_serves(tmp_path, httpserver_ipv4):
    """A registry serving altered manifest bytes under the expected Docker-Content-Digest fails."""
    import hashlib
    import json

    from moltbuild import report
    from moltbuild.registry.verify import verify
    from moltbuild.settings import load_settings
    from tests.unit.records import pushed_entry

    honest, altered = b'{"schemaVersion": 2}', b'{"schemaVersion": 2, "evil": true}'
    digest = "sha256:" + hashlib.sha256(honest).hexdigest()
    host = f"127.0.0.1:{httpserver_ipv4.port}"
    entry = pushed_entry("api", repository=f"{host}/ns/api", tags=["sha-abc1234"], digest=digest)
    path = tmp_path / "images.json"
    path.write_text(json.dumps({"version": 1, "images": [entry]}))
    httpserver_ipv4.expect_request("/v2/ns/api/manifests/sha-abc1234").respond_with_data(
        altered,
        headers={"Docker-Content-Digest": digest},
        content_type="application/vnd.oci.image.manifest.v1+json",
    )
    s = load_settings(tmp_path, environ={}, tool_config={})
    (check,) = verify(s, report_path=path, registries=Registries(s))
    assert check.verdict == "error" and check.ref == f"{host}/ns/api:sha-abc1234"
    assert check.reason.startswith(f"{host}: ns/api:sha-abc1234 served a manifest whose sha256 is")
    assert report.read(path)[0].digest == digest  # the report is not touched


# -- tag --source into another repository: the signature and attestations follow the image ------


def promote_session(tmp_path: Path, fake, said: list[str]):
    from moltbuild.flows.context import Session
    from moltbuild.settings import load_settings
    from moltbuild.system.processes import Runner

    env = {"MOLTBUILD_INSECURE_REGISTRIES": fake.host}
    settings = load_settings(tmp_path, environ=env, tool_config={"registry": f"{fake.host}/ns"})
    return Session(settings=settings, runner=Runner(out=said.append, environ={}), environ={})


def sign(fake, repo: str, digest: str) -> str:
    """What `cosign sign` leaves: a `.sig` manifest whose layer is the signed payload."""
    import json

    from moltbuild.supply.attached import tag_for
    from tests.unit.test_registry_client import OCI_CONFIG, OCI_MANIFEST, sha

    payload = json.dumps({"critical": {"image": {"docker-manifest-digest": digest}}}).encode()
    config = b"{}"
    fake.blobs[(repo, sha(payload))] = payload
    fake.blobs[(repo, sha(config))] = config
    layer = {
        "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
        "digest": sha(payload),
        "size": len(payload),
        "annotations": {"dev.cosignproject.cosign/signature": "MEUCIQ=="},
    }
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha(config), "size": len(config)},
            "layers": [layer],
        }
    ).encode()
    fake._store(repo, tag_for(digest, "sig"), OCI_MANIFEST, body)
    return tag_for(digest, "sig")


@pytest.mark.parametrize("mount", [True, False])
def test_a_promotion_into_another_repository_carries_the_signature_and_attestations(
    tmp_path, httpserver_ipv4, mount
):
    from moltbuild.flows.retag import tag_images
    from moltbuild.supply import attached
    from tests.unit.test_registry_client import FakeRegistry

    fake, said = FakeRegistry(httpserver_ipv4, mount=mount), []
    digest, _ = fake.add_image("ns/app", "sha-1")
    session = promote_session(tmp_path, fake, said)
    client = session.registries.client(fake.host)
    sig = sign(fake, "ns/app", digest)
    att = attached.write_unsigned(client, "ns/app", digest, [{"predicateType": "https://slsa.dev/x"}])
    tag_images(session, ["ns/released:v1"], source=f"{fake.host}/ns/app:sha-1")
    assert fake.manifests[("ns/released", "v1")] == fake.manifests[("ns/app", "sha-1")]
    assert attached.is_signed(client, "ns/released", digest)
    assert fake.manifests[("ns/released", sig)] == fake.manifests[("ns/app", sig)]
    (copied,) = attached.read(client, "ns/released", digest)
    assert copied.predicate_type == "https://slsa.dev/x"
    assert said[-1] == f"{fake.host}/ns/released: copied {sig}, {att} from {fake.host}/ns/app"
    httpserver_ipv4.check()


def test_a_promoted_index_carries_each_platforms_signature(tmp_path, httpserver_ipv4):
    import json

    from moltbuild.flows.retag import tag_images
    from tests.unit.test_registry_client import FakeRegistry

    fake, said = FakeRegistry(httpserver_ipv4), []
    index, body = fake.add_index("ns/app", "sha-1")
    platforms = [c["digest"] for c in json.loads(body)["manifests"]]
    sigs = [sign(fake, "ns/app", d) for d in (index, platforms[0])]  # the second platform: unsigned
    tag_images(promote_session(tmp_path, fake, said), ["ns/released:v1"], source=f"{fake.host}/ns/app:sha-1")
    for sig in sigs:
        assert fake.manifests[("ns/released", sig)] == fake.manifests[("ns/app", sig)]
    copied = [line for line in said if "copied" in line]
    assert copied == [f"{fake.host}/ns/released: copied {sig} from {fake.host}/ns/app" for sig in sigs]
    assert not any("no signature to copy" in line for line in said)  # an unsigned platform: silent


def test_a_promotion_without_signature_says_so_and_one_in_the_same_repository_copies_nothing(
    tmp_path, httpserver_ipv4
):
    from moltbuild.flows.retag import tag_images
    from tests.unit.test_registry_client import FakeRegistry

    fake, said = FakeRegistry(httpserver_ipv4), []
    digest, _ = fake.add_image("ns/app", "sha-1")
    session = promote_session(tmp_path, fake, said)
    tag_images(session, ["ns/released:v1"], source=f"{fake.host}/ns/app:sha-1")
    assert fake.manifests[("ns/released", "v1")] == fake.manifests[("ns/app", "sha-1")]
    assert said[-1].startswith(f"{fake.host}/ns/released: no signature to copy")
    said.clear()
    sign(fake, "ns/app", digest)
    tag_images(session, ["rc1"], source=f"{fake.host}/ns/app:sha-1")
    assert said == [f"{fake.host}/ns/app:rc1 -> {digest}"]  # the .sig already sits beside it
    tag_images(session, ["ns/other:v1"], source=f"{fake.host}/ns/app:sha-1", dry_run=True)
    assert said[-1] == f"+ copy the signature and attestations of {fake.host}/ns/app:sha-1 (if any) into " + (
        f"{fake.host}/ns/other"
    )


def test_a_deployed_host_that_does_not_resolve_names_the_kustomization_entry(tmp_path: Path):
    from moltbuild.settings import load_settings

    path = deploying(
        tmp_path,
        "images:\n  - name: app\n    newName: no-such-registry.invalid/team/app\n    newTag: v1\n",
        "app",
    )
    (target,) = deployed_targets(path, set())
    settings = load_settings(tmp_path, environ={}, tool_config={})
    found = registry_verify.check(target, Registries(settings))
    assert found.verdict == "error"
    assert found.reason == (
        f"no-such-registry.invalid: the name does not resolve (DNS); the host comes from {path} "
        "images[0] (app): check it there, or the network's DNS"
    )
    assert "MOLTBUILD_REGISTRY" not in found.reason
