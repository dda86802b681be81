"""Attach to one pushed digest its SBOM and provenance, signed when a signer is configured: the
same steps for every backend, from this machine, once the registry has the digest."""

from __future__ import annotations

import concurrent.futures as cf
import functools
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from moltbuild.refs import ImageRef
from moltbuild.registry.client import RegistryClient
from moltbuild.supply import attached, sbom
from moltbuild.supply.cosign import Cosign, Mode, Signer, Verifier
from moltbuild.supply.provenance import PROVENANCE_TYPE, SBOM_TYPES, BuildFacts, predicate, statement
from moltbuild.supply.tools import RegistryAccess
from moltbuild.system.processes import Runner


@dataclass(frozen=True)
class Attached:
    """The references the report keeps: where the SBOM, provenance and signature live."""

    sbom: str
    provenance: str
    signature: str  # HOST/PATH:sha256-<hex>.sig, or "unsigned"
    packages: int | None = None  # None: already attested, not scanned again
    note: str = ""
    scanned: str = ""  # where syft read the image: LOCAL_COPY or FROM_REGISTRY ('' when not scanned)


LOCAL_COPY = "its local filesystem, before the push"
FROM_REGISTRY = "the registry"


@dataclass(frozen=True)
class LocalSbom:
    """An SBOM syft made from the built image's filesystem before its push."""

    config: str  # the image's config digest (its ID): it describes the pushed image only if equal
    path: Path
    packages: int


LocalScan = Callable[[], "LocalSbom | None"]  # waits for the scan started before the push
Scan = Callable[[], tuple[Path, int, str]]  # the SBOM file, its package count, where it was scanned


def _complete(kinds: set[str]) -> bool:
    """Provenance and an SBOM: what every attested image carries."""
    return PROVENANCE_TYPE in kinds and bool(kinds & set(SBOM_TYPES.values()))


@dataclass
class Attester:
    runner: Runner
    client: RegistryClient
    access: RegistryAccess
    signer: Signer
    sbom_format: str
    workdir: Path
    verifier: Verifier | None = None  # MOLTBUILD_VERIFY_KEY / _IDENTITY: whose signature counts
    lock: threading.Lock = field(default_factory=threading.Lock)

    def already(self, ref: ImageRef, digest: str) -> Attached | None:
        """A digest attested before (a reused image, a retried push) keeps what it has, as long as
        it has what this run would attach: provenance, an SBOM, and, when we sign, signed ones and a
        signature the configured signer's key or identity verifies (after a key rotation, or one
        signed by anybody else, the image is signed again)."""
        signing = self.signer.mode is not Mode.UNSIGNED
        found = [a for a in attached.read(self.client, ref.repository, digest) if a.signed or not signing]
        if not _complete({a.predicate_type for a in found}):
            return None
        signed = attached.is_signed(self.client, ref.repository, digest) and self._ours(ref, digest)
        if signing and not signed:
            return None
        att = str(ref.with_tag(attached.tag_for(digest, "att")))
        sig = str(ref.with_tag(attached.tag_for(digest, "sig"))) if signed else "unsigned"
        return Attached(att, att, sig, note="already attested")

    def _ours(self, ref: ImageRef, digest: str) -> bool:
        """Signed by the configured signer: this run's key, else the verifier's key or keyless
        identity; a signature nobody configured vouches for counts as none."""
        cosign = Cosign(self.runner, self.access)
        verifier = self.verifier
        if self.signer.mode is Mode.KEY:
            with self.lock:  # images are attested in parallel; the key file is written once
                pub = cosign.public_key(self.signer, self.workdir / "signing.pub")
            verifier = Verifier(key=str(pub))
        return verifier is not None and cosign.verify(f"{ref.name}@{digest}", verifier).ok

    def attest(self, facts: BuildFacts, local: LocalScan | None = None) -> Attached:
        """`local`: the SBOM scan of the image's local filesystem, started before the push; used when
        it has the pushed image's config, else the pushed image is scanned from the registry."""
        ref = ImageRef.parse(facts.repository, "image repository")
        by_digest = f"{ref.name}@{facts.digest}"
        pushed = self.client.blobs_answer(ref.repository, facts.digest)  # syft would retry a loop for minutes
        body = predicate(facts)
        scan = functools.partial(self._sbom, facts, by_digest, pushed.config_digest(), local)
        if self.signer.mode is not Mode.UNSIGNED:
            return self._signed(ref, by_digest, facts, body, scan)
        sbom_path, packages, scanned = scan()
        att = str(ref.with_tag(attached.tag_for(facts.digest, "att")))
        document = json.loads(sbom_path.read_text())
        statements = [
            statement(ref.name, facts.digest, PROVENANCE_TYPE, body),
            statement(ref.name, facts.digest, SBOM_TYPES[self.sbom_format], document),
        ]
        attached.write_unsigned(self.client, ref.repository, facts.digest, statements)
        return Attached(att, att, "unsigned", packages, scanned=scanned)

    def _sbom(
        self, facts: BuildFacts, by_digest: str, pushed: str, local: LocalScan | None
    ) -> tuple[Path, int, str]:
        """The SBOM file, its package count and where it was scanned: the local scan's when it
        describes the pushed image (its config digest is `pushed`: the same layers, uncompressed),
        else syft reads the pushed image back from the registry."""
        made = local() if local else None
        if made is not None:
            if made.config == pushed:
                return made.path, made.packages, LOCAL_COPY
            self.runner.say(
                f"[{facts.image}] attest: the local image's config is {made.config}, the pushed image's "
                f"{pushed or 'not a single image'}: the SBOM is read from the registry"
            )
        path = self.workdir / f"{facts.image}.sbom.json"
        packages = sbom.generate(self.runner, by_digest, self.access, self.sbom_format, path)
        return path, packages, FROM_REGISTRY

    def _signed(self, ref: ImageRef, by_digest: str, facts: BuildFacts, body: dict, scan: Scan) -> Attached:
        """syft, `cosign sign` and the provenance attestation at once (the signature has its own
        `.sig` tag). With a key, cosign signs both attestations without uploading them and one
        `.att` write attaches the two; keyless (a certificate per envelope), cosign attaches each,
        the SBOM's after the provenance's since each rewrites the `.att` tag."""
        provenance = self.workdir / f"{facts.image}.provenance.json"
        provenance.write_text(json.dumps(body, indent=1))
        cosign = Cosign(self.runner, self.access)
        keyed = self.signer.mode is Mode.KEY
        with cf.ThreadPoolExecutor(max_workers=3) as pool:
            signed = pool.submit(cosign.sign, by_digest, self.signer)
            attest = cosign.envelope if keyed else cosign.attest
            proven = pool.submit(attest, by_digest, self.signer, "provenance", provenance)
            try:
                sbom_path, packages, scanned = scan()
                if keyed:
                    sbom_envelope = cosign.envelope(by_digest, self.signer, self.sbom_format, sbom_path)
            finally:
                cf.wait([signed, proven])
            signed.result()
            proven.result()
        if keyed:
            items = [(proven.result(), PROVENANCE_TYPE), (sbom_envelope, SBOM_TYPES[self.sbom_format])]
            attached.write(self.client, ref.repository, facts.digest, items, replace_signed=True)
        else:
            cosign.attest(by_digest, self.signer, self.sbom_format, sbom_path)
        att = str(ref.with_tag(attached.tag_for(facts.digest, "att")))
        sig = str(ref.with_tag(attached.tag_for(facts.digest, "sig")))
        return Attached(att, att, sig, packages, scanned=scanned)
