"""The OCI registry: client, auth, tags put and confirmed, verify, promote, a local registry."""
