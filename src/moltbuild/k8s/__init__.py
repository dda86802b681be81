"""Kubernetes: the cluster client, the kaniko setup manifests, the kustomization."""
