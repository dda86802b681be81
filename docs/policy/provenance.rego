# What a moltbuild image's SLSA provenance must say, for
#   cosign verify-attestation --key cosign.pub --type slsaprovenance1 \
#     --policy docs/policy/provenance.rego IMAGE@sha256:...
# cosign evaluates `data.signature.allow` with the signed in-toto statement as `input`
# (docs/handbook.md, "Checking the provenance with a policy").
package signature

import rego.v1

default allow := false

allow if {
	input.predicateType == "https://slsa.dev/provenance/v1"
	build_type_ok
	subject_ok
	builder_ok
}

# The build type moltbuild writes: its document in moltbuild's repository (or its URN).
build_type_ok if endswith(input.predicate.buildDefinition.buildType, "/docs/buildtype-image-v1.md")

build_type_ok if input.predicate.buildDefinition.buildType == "urn:moltbuild:buildtype:image:v1"

# One subject: the image, by a sha256 digest (cosign has checked it is the image verified).
subject_ok if {
	count(input.subject) == 1
	regex.match(`^[0-9a-f]{64}$`, input.subject[0].digest.sha256)
}

# Who built it: the release workflow on main or a v* tag, or moltbuild on a named machine.
# Narrow the first pattern to your repository (github.com/OWNER/REPO/) before relying on it.
builder_ok if regex.match(
	`^https://github\.com/[^/]+/[^/]+/\.github/workflows/[^@]+@refs/(heads/main|tags/v[^/]*)$`,
	input.predicate.runDetails.builder.id,
)

builder_ok if startswith(input.predicate.runDetails.builder.id, "urn:moltbuild:builder:")
