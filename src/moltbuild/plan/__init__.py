"""Planning, pure: which images, tags, build args, labels and input digests; what changed."""
