"""GitHub: the REST client, Actions step summaries and outputs, pushing the kustomization pin."""
