"""Kubernetes: the cluster client, the kaniko setup manifests, the kustomization, the workloads
of k8s/ as rendered."""
