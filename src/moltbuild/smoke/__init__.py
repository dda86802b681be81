"""The release check: probe plans from manifests, running an image and checking it."""
