"""One home for each concept (docs/architecture.md, "One home for each of these"): a second reader,
writer or list of the same thing is how copies drift apart. Each test names the one home and fails
on a copy anywhere else in src/moltbuild. (The kustomization reader: tests/unit/test_deployment.py;
no project names: tests/unit/test_no_project_names.py; the build flags: tests/unit/test_cli.py.)"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "moltbuild"
TRANSIENT = {429, 500, 502, 503, 504}
ON_OFF = {"1", "0", "true", "false", "yes", "no", "on", "off"}


def modules() -> Iterator[tuple[str, ast.AST]]:
    for path in sorted(SRC.rglob("*.py")):
        yield path.relative_to(SRC).as_posix(), ast.parse(path.read_text(encoding="utf-8"), str(path))


def where(predicate) -> set[str]:
    """The modules with a node for which `predicate(node)` holds."""
    return {name for name, tree in modules() if any(predicate(node) for node in ast.walk(tree))}


def constants(node: ast.AST) -> set:
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return {e.value for e in node.elts if isinstance(e, ast.Constant)}
    return set()


def called(node: ast.AST, name: str) -> bool:
    """A call of `name` or `something.name`."""
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    return (isinstance(func, ast.Name) and func.id == name) or (
        isinstance(func, ast.Attribute) and func.attr == name
    )


def test_one_list_of_transient_http_codes_in_the_retry_policy():
    assert where(lambda n: len(constants(n) & TRANSIENT) >= 2) == {"system/retry.py"}


def test_on_off_words_are_read_only_by_settings():
    copies = where(lambda n: len(constants(n) & ON_OFF) >= 3)
    assert copies == {"settings/keys.py"}


def test_the_report_document_is_assembled_only_by_report():
    def document(node: ast.AST) -> bool:
        keys = {k.value for k in getattr(node, "keys", []) if isinstance(k, ast.Constant)}
        return isinstance(node, ast.Dict) and {"version", "images"} <= keys

    assert where(document) == {"report.py"}


def test_registry_clients_come_only_from_the_run_context():
    assert where(lambda n: called(n, "Registries")) == {"flows/context.py"}


def test_a_run_context_is_made_only_in_cli():
    def makes(node: ast.AST) -> bool:
        return called(node, "run_context") or (called(node, "create") and "Session" in ast.unparse(node))

    made = where(makes)
    assert {m for m in made if not m.startswith("cli/")} == set()


def test_children_start_from_the_run_contexts_environment():
    """`os.environ` is read where a command starts (cli/, the context, the settings loader), nowhere
    below: a Runner, a Cluster and the registry get the context's environment."""

    def reads_environ(node: ast.AST) -> bool:
        return isinstance(node, ast.Attribute) and ast.unparse(node) == "os.environ"

    edges = {m for m in where(reads_environ) if not m.startswith("cli/")}
    assert edges == {"flows/context.py", "settings/__init__.py"}


def test_time_sleep_only_where_a_policy_or_a_poll_owns_it():
    """Retries wait through `system/retry` (its clock injected in tests); the rest are readiness
    polls with their own deadline, named here so a new retry loop cannot hide among them."""

    def sleeps(node: ast.AST) -> bool:
        return isinstance(node, ast.Attribute) and ast.unparse(node) == "time.sleep"

    polls = {"smoke/run.py", "registry/local.py", "backends/kaniko.py", "ci/dispatch.py"}
    assert where(sleeps) == {"system/retry.py", *polls}


def test_every_image_records_one_outcome():
    """`status`, a second outcome that said "built" for a failed push, is gone from the record."""
    from dataclasses import fields

    from moltbuild.report import ImageRecord

    names = {f.name for f in fields(ImageRecord)}
    assert "outcome" in names and not names & {"status", "skipped"}
