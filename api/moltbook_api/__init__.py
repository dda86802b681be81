"""moltbook API: a small JSON API on the standard library."""

__version__ = "0.1.0"
