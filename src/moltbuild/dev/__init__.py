"""`invoke dev`: the inner loop. Watch the build contexts, rebuild what changed with the loop's fast
settings, run the result where the user works (a local container runtime or a dev namespace of
the cluster), stream logs, forward ports and sync files that need no rebuild."""
