"""The host: processes, console output, storage probe, locks, system packages."""
