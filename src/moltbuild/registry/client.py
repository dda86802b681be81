"""The OCI distribution operations (manifests, tags, blobs, cross-repository copies) over the
registry's HTTP session (registry/session.py: auth challenges, deadlines, retries)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from urllib.parse import urljoin

import requests

from moltbuild.errors import RegistryError
from moltbuild.registry.session import RegistrySession

MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
ACCEPT = ", ".join(MANIFEST_TYPES)


@dataclass
class Manifest:
    digest: str
    media_type: str
    body: bytes = b""

    def platforms(self) -> list[str]:
        """For an index (read with GET), each platform manifest's digest, in its order; else none."""
        doc = json.loads(self.body) if self.body else {}
        children = doc.get("manifests") if isinstance(doc, dict) else None
        return [str(c.get("digest")) for c in children or [] if isinstance(c, dict)]

    def digests(self) -> set[str]:
        """Its digest and its platforms': a local copy pulled through it carries one of these."""
        return {self.digest, *self.platforms()}

    def config_digest(self) -> str:
        """A single image's config digest (read with GET), '' for an index: what two copies of one
        image share however their layers were compressed."""
        doc = json.loads(self.body) if self.body else {}
        config = doc.get("config") if isinstance(doc, dict) else None
        return str(config.get("digest") or "") if isinstance(config, dict) else ""


class RegistryClient(RegistrySession):
    """One registry host: its session (auth, retries, deadlines) and the operations on it."""

    def manifest(self, name: str, reference: str, *, method: str = "HEAD") -> Manifest | None:
        """A manifest by tag or digest (None when the registry has no such tag/digest). A HEAD
        answered without `Docker-Content-Digest` is asked again with GET: the bytes decide."""
        with self.operation(f"read manifest {name}:{reference}"):
            resp = self._manifest_answer(method, name, reference)
            if resp is not None and method == "HEAD" and not resp.headers.get("Docker-Content-Digest"):
                method, resp = "GET", self._manifest_answer("GET", name, reference)
        if resp is None:
            return None
        media_type = resp.headers.get("Content-Type", "").split(";")[0]
        if method == "HEAD":
            claimed = resp.headers["Docker-Content-Digest"]
            if reference.startswith("sha256:") and claimed != reference:
                raise self._altered(f"{name}@{reference}", "manifest", claimed, reference)
            return Manifest(claimed, media_type)
        self.json_object(resp, f"manifest {name}:{reference}")
        claimed = resp.headers.get("Docker-Content-Digest", "")
        expected = [d for d in (claimed, reference) if d.startswith("sha256:")]
        digest = self._checked(f"{name}:{reference}", "manifest", resp.content, expected)
        return Manifest(digest, media_type, resp.content)

    def resolved(self, name: str, reference: str) -> Manifest | None:
        """What `name:reference` serves, asked once per run (this client lives for one run): a
        base's tag is resolved once, and the pull check and the provenance see the same digest."""
        key = (name, reference)
        cache: dict[tuple[str, str], Manifest | None] = self.__dict__.setdefault("_resolved", {})
        if key not in cache:
            cache[key] = self.manifest(name, reference, method="GET")
        return cache[key]

    def _manifest_answer(self, method: str, name: str, reference: str) -> requests.Response | None:
        resp = self.request(
            method,
            f"/v2/{name}/manifests/{reference}",
            scope=f"repository:{name}:pull",
            headers={"Accept": ACCEPT},
        )
        if resp.status_code == 404:
            return None
        self._raise_for(resp, f"manifest {name}:{reference}")
        return resp

    def _checked(self, what: str, kind: str, body: bytes, expected: list[str]) -> str:
        """The sha256 of what was served; an expected digest (a header, the reference asked for)
        that disagrees with the bytes is a registry (or proxy) that altered them."""
        actual = "sha256:" + hashlib.sha256(body).hexdigest()
        wrong = next((d for d in expected if d != actual), None)
        if wrong:
            raise self._altered(what, kind, actual, wrong)
        return actual

    def _altered(self, what: str, kind: str, actual: str, expected: str) -> RegistryError:
        return RegistryError(
            f"{self.host}: {what} served a {kind} whose sha256 is {actual}, not {expected}: the "
            "registry or something between altered it; do not trust this registry"
        )

    def put_manifest(self, name: str, reference: str, body: bytes, media_type: str) -> str:
        resp = self.request(
            "PUT",
            f"/v2/{name}/manifests/{reference}",
            scope=f"repository:{name}:pull,push",
            data=body,
            headers={"Content-Type": media_type},
        )
        self._raise_for(resp, f"manifest push of {name}:{reference}", pushing=True)
        sent = "sha256:" + hashlib.sha256(body).hexdigest()
        claimed = resp.headers.get("Docker-Content-Digest") or sent
        if claimed != sent:  # it stored other bytes than those sent (or says so): nothing to trust
            raise RegistryError(
                f"{self.host}: manifest push of {name}:{reference} answered Docker-Content-Digest "
                f"{claimed}, but the bytes sent hash to {sent}: the registry or something between "
                "altered them; do not trust this registry"
            )
        return sent

    def tags(self, name: str, *, page_size: int | None = None) -> list[str]:
        """Every tag, following `Link: <...>; rel="next"` pagination."""
        out: list[str] = []
        path: str | None = f"/v2/{name}/tags/list" + (f"?n={page_size}" if page_size else "")
        while path:
            resp = self.request("GET", path, scope=f"repository:{name}:pull")
            if resp.status_code == 404:
                raise RegistryError(
                    f"{self.host}: repository {name} not found (name unknown); check the "
                    "image name and MOLTBUILD_REGISTRY"
                )
            self._raise_for(resp, f"tags of {name}")
            out += self.json_object(resp, f"tags of {name}").get("tags") or []
            path = resp.links.get("next", {}).get("url")
        return out

    def catalog(self, *, page_size: int | None = None) -> list[str]:
        """Every repository name the registry lists, following pagination."""
        out: list[str] = []
        path: str | None = "/v2/_catalog" + (f"?n={page_size}" if page_size else "")
        while path:
            resp = self.request("GET", path, scope="registry:catalog:*")
            self._raise_for(resp, "the catalog")
            out += self.json_object(resp, "the catalog").get("repositories") or []
            path = resp.links.get("next", {}).get("url")
        return out

    def blob(self, name: str, digest: str) -> bytes:
        resp = self.request("GET", f"/v2/{name}/blobs/{digest}", scope=f"repository:{name}:pull")
        self._raise_for(resp, f"blob {digest[:19]} of {name}")
        if not digest.startswith("sha256:"):
            raise RegistryError(f"{self.host}: blob {name}@{digest}: only sha256 digests can be checked")
        self._checked(f"{name}@{digest}", "blob", resp.content, [digest])
        return resp.content

    def blobs_answer(self, name: str, reference: str) -> Manifest:
        """Every blob of `name@reference` (each platform's too) answers a HEAD, redirects followed
        and bounded: what a tool about to pull the image (syft) needs, asked first so a redirect
        loop or a missing blob is one line, not that tool's minutes of retries. Its manifest."""
        missing = RegistryError(f"{self.host}: {name}@{reference} is not (wholly) in the registry")
        with self.operation(f"check the blobs of {name}@{reference}"):
            found = self.manifest(name, reference, method="GET")
            if found is None:
                raise missing
            children = [self.manifest(name, d, method="GET") for d in found.platforms()]
            for manifest in children or [found]:
                if manifest is None:
                    raise missing
                doc = json.loads(manifest.body)
                for desc in [doc.get("config") or {}, *(doc.get("layers") or [])]:
                    digest = str(desc.get("digest"))
                    resp = self.request("HEAD", f"/v2/{name}/blobs/{digest}", scope=f"repository:{name}:pull")
                    self._raise_for(resp, f"blob {digest[:19]} of {name}")
        return found

    def has_blob(self, name: str, digest: str) -> bool:
        resp = self.request("HEAD", f"/v2/{name}/blobs/{digest}", scope=f"repository:{name}:pull")
        return resp.status_code == 200

    def push_blob(self, name: str, data: bytes) -> str:
        """Upload `data` as a blob of `name` (monolithic: POST, then PUT with the digest); its digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if self.has_blob(name, digest):
            return digest
        scope = f"repository:{name}:pull,push"
        resp = self.request("POST", f"/v2/{name}/blobs/uploads/", scope=scope)
        self._raise_for(resp, f"blob upload into {name}", pushing=True)
        self._finish_upload(name, resp.headers["Location"], digest, data, scope)
        return digest

    def _finish_upload(
        self, name: str, location: str, digest: str, data: bytes, scope: str | list[str]
    ) -> None:
        """The monolithic upload's PUT to the Location the registry opened."""
        sep = "&" if "?" in location else "?"
        put = self.request(
            "PUT",
            f"{urljoin(self.base + '/', location)}{sep}digest={digest}",
            scope=scope,
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        self._raise_for(put, f"blob upload into {name}", pushing=True)

    def mount_blob(self, name: str, digest: str, source: str) -> None:
        """Make `digest` of `source` available in `name`: a cross-repository mount, else a copy."""
        if self.has_blob(name, digest):
            return
        scopes = [f"repository:{name}:pull,push", f"repository:{source}:pull"]
        resp = self.request("POST", f"/v2/{name}/blobs/uploads/?mount={digest}&from={source}", scope=scopes)
        if resp.status_code == 201:
            return
        if resp.status_code == 404:  # distribution answers 404 NAME_INVALID/UNKNOWN for a bad target
            raise RegistryError(
                f"{self.host}: cannot create {name} there ({_error_code(resp) or 'HTTP 404'}): check the "
                "target repository name and that the credentials may push to it"
            )
        self._raise_for(resp, f"blob mount into {name}", pushing=True)
        # 202: the registry opened an upload instead of mounting; upload the bytes ourselves.
        with self.operation(f"copy blob {digest[:19]} from {source} into {name}", fresh=True):
            data = self.blob(source, digest)  # moving bytes: a bound of its own
            self._finish_upload(name, resp.headers["Location"], digest, data, scopes)

    def image_config(self, name: str, reference: str) -> dict | None:
        """The image config (labels live in ["config"]["Labels"]); for an index, its first image's."""
        found = self.manifest(name, reference, method="GET")
        return None if found is None else self.config_of(name, found)

    def image_size(self, name: str, found: Manifest) -> int | None:
        """Bytes a pull moves: config + layers, for an index every platform's (compressed)."""
        doc = json.loads(found.body)
        if "manifests" in doc:
            total = 0
            for child in doc["manifests"]:
                sub = self.manifest(name, child["digest"], method="GET")
                size = self.image_size(name, sub) if sub else None
                if size is None:
                    return None
                total += size
            return total
        parts = [doc.get("config") or {}, *(doc.get("layers") or [])]
        return sum(int(p.get("size") or 0) for p in parts)

    def config_of(self, name: str, found: Manifest) -> dict | None:
        """The config of a manifest already fetched (GET): no second manifest request."""
        doc = json.loads(found.body)
        if "manifests" in doc:
            if not doc["manifests"]:
                return None
            return self.image_config(name, doc["manifests"][0]["digest"])
        digest = doc["config"]["digest"]
        try:
            config = json.loads(self.blob(name, digest))
        except ValueError:
            config = None
        if not isinstance(config, dict):
            raise RegistryError(
                f"{self.host}: config blob {digest} of {name} is not JSON; the image is broken"
            )
        return config

    def copy(self, source_name: str, reference: str, name: str, tag: str) -> str:
        """Tag `source_name:reference` as `name:tag` by copying the manifest; no pull, no daemon."""
        return self.put_tags(name, [tag], source_name=source_name, reference=reference)[tag]

    def put_tags(
        self,
        name: str,
        tags: list[str],
        *,
        reference: str,
        source_name: str | None = None,
        manifest: Manifest | None = None,
    ) -> dict[str, str]:
        """Point each of `tags` in `name` at the manifest `source_name:reference` (one GET unless
        `manifest` is that manifest already, a PUT per tag; blobs are mounted first across
        repositories). Returns tag -> digest served."""
        source_name = source_name or name
        found = manifest or self.manifest(source_name, reference, method="GET")
        if found is None:
            raise RegistryError(
                f"{self.host}: {source_name}:{reference} not found (tag unknown); nothing to retag"
            )
        if name != source_name:
            self._copy_children(source_name, name, json.loads(found.body))
        return {tag: self.put_manifest(name, tag, found.body, found.media_type) for tag in tags}

    def _copy_children(self, source_name: str, name: str, doc: dict) -> None:
        if "manifests" in doc:  # an index: copy each platform's manifest by digest first
            for child in doc["manifests"]:
                sub = self.manifest(source_name, child["digest"], method="GET")
                if sub is None:
                    raise RegistryError(f"{self.host}: {source_name}@{child['digest']} is missing")
                self._copy_children(source_name, name, json.loads(sub.body))
                self.put_manifest(name, child["digest"], sub.body, sub.media_type)
            return
        for desc in [doc["config"], *doc.get("layers", [])]:
            self.mount_blob(name, desc["digest"], source_name)

    def _raise_for(self, resp: requests.Response, what: str, *, pushing: bool = False) -> None:
        if resp.ok:
            return
        if resp.status_code == 401:
            who = f"user {self.username!r}" if self.has_credentials else "no credentials"
            raise RegistryError(
                f"{self.host}: 401 unauthorized for {what} ({who} tried); "
                "set REGISTRY_USERNAME/REGISTRY_PASSWORD or GITHUB_USERNAME/GITHUB_TOKEN"
            )
        if resp.status_code == 403:
            need = "write:packages" if pushing else "read:packages"
            raise RegistryError(
                f"{self.host}: 403 forbidden for {what}; the credentials lack permission "
                f"(a GitHub token needs {need})"
            )
        code = _error_code(resp)
        if code == "NAME_UNKNOWN":
            raise RegistryError(f"{self.host}: {what}: repository not found (name unknown)")
        if code == "MANIFEST_UNKNOWN":
            raise RegistryError(f"{self.host}: {what}: tag or digest not found (manifest unknown)")
        raise RegistryError(f"{self.host}: {what} answered HTTP {resp.status_code}: {resp.text[:200]}")


def _error_code(resp: requests.Response) -> str:
    try:
        errors = resp.json().get("errors") or []
        return errors[0].get("code", "") if errors else ""
    except (ValueError, AttributeError):
        return ""
