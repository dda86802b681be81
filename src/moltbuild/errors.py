"""One exception base, caught only at the edges (tasks, sessions)."""

from __future__ import annotations


class MoltbuildError(Exception):
    """Base error: a one-line message for the user and the exit code to leave with."""

    exit_code = 1

    def __init__(self, message: str, *, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConfigError(MoltbuildError):
    """Bad settings, a malformed .env file, a bad flag value."""

    exit_code = 2


class ToolMissingError(MoltbuildError):
    """A system tool is not installed; the message says how to install it."""

    exit_code = 127


class GuardError(MoltbuildError):
    """A choice that cannot work here (docker on nested overlay) and was not forced."""

    exit_code = 3


class CommandError(MoltbuildError):
    """A child process failed; keeps argv (already masked), return code and the stderr tail."""

    def __init__(self, argv: list[str], returncode: int, tail: str = "", *, what: str = ""):
        self.argv = argv
        self.returncode = returncode
        self.tail = tail
        head = what or f"`{' '.join(argv[:3])}`"
        msg = f"{head} failed with exit code {returncode}"
        if tail.strip():
            msg += f": {tail.strip().splitlines()[-1]}"
        super().__init__(msg)


class BuildError(MoltbuildError):
    """One or more images failed to build or push."""


class JobError(MoltbuildError):
    """One image's job failed; `image_id` is set when a local image was built before the failure
    (a push can be retried with `invoke push`)."""

    def __init__(
        self, message: str, *, image_id: str | None = None, smoke: str = "", exit_code: int | None = None
    ):
        super().__init__(message, exit_code=exit_code)
        self.image_id = image_id
        self.smoke = smoke


class RegistryError(MoltbuildError):
    """The registry said no, or could not be reached."""
