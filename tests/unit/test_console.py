"""The console: buildah's known noise is said once per image, in plain words."""

from moltbuild.system.console import Console

WARNING = (
    'time="2026-12-01T09:00:00Z" level=warning msg="HEALTHCHECK is not supported for OCI image format '
    'and will be ignored. Must use `docker` format"'
)


def test_the_oci_healthcheck_warning_is_one_plain_line_per_image():
    shown: list[str] = []
    console = Console(out=shown.append, verbose=False)
    for step in range(1, 9):  # buildah repeats it after every step
        console.output_line("[api] ", f"STEP {step}/8: RUN true")
        console.output_line("[api] ", WARNING)
        console.output_line("[frontend] ", WARNING)
    notes = [line for line in shown if "HEALTHCHECK" in line]
    assert notes == [
        "[api] note: the OCI image format has no HEALTHCHECK field, so buildah leaves it out; "
        "the smoke check reads it from the Dockerfile",
        "[frontend] note: the OCI image format has no HEALTHCHECK field, so buildah leaves it out; "
        "the smoke check reads it from the Dockerfile",
    ]
    assert len([line for line in shown if line.startswith("[api] build ")]) == 8


def test_verbose_shows_the_warning_as_buildah_wrote_it():
    shown: list[str] = []
    console = Console(out=shown.append, verbose=True)
    for _ in range(3):
        assert console.output_line("[api] ", WARNING) == WARNING  # what the log keeps
    assert shown == [f"[api] {WARNING}"] * 3
