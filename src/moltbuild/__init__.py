"""moltbuild: build, tag, push and verify a repository's container images from anywhere."""

__version__ = "0.1.0"
