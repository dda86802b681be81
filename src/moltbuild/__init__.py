"""moltbuild: build, tag, push and verify the moltbook container images from anywhere."""

__version__ = "0.1.0"
