"""Supply chain: what every pushed image carries beside its layers. An SBOM (syft), SLSA v1
provenance, and a cosign signature over the digest, attached in cosign's own layout so a user's
`cosign verify` and a cluster policy agree with `invoke verify`."""
