"""Backends: how to build. The contract, selection, buildah, docker, kaniko and the local image store."""
