"""`moltbuild init` reads compose files' `build:` sections first: context, dockerfile, args and
target as compose says them, the repository from `image:`, a note for what it cannot use; the
table it writes loads."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from moltbuild.adopt.compose import preferred
from moltbuild.adopt.survey import survey_repository
from moltbuild.cli.main import main
from moltbuild.project import load_images, read_tool_table
from moltbuild.system.processes import Runner

COMPOSE = """\
services:
  api:
    build: ./api
    image: ghcr.io/shop/shop-api:1.2
  web:
    image: registry.example:5000/shop/storefront@sha256:0123
    build:
      context: ./web
      dockerfile: Dockerfile.prod
      target: runtime
      args:
        NODE_ENV: production
        NPM_TOKEN: abc
        FROM_ENV:
  cli:
    build: {context: ., dockerfile: tools/cli.Dockerfile, args: [MODE=release, BARE]}
  db:
    image: postgres:16
  remote:
    build: https://github.com/x/y.git#main
"""


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "shop"
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    write(root, "compose.yaml", COMPOSE)
    write(root, "docker-compose.yml", "services: {ignored: {build: ./nowhere}}\n")  # compose.yaml wins
    write(root, "api/Dockerfile", "FROM node:20-alpine\n")
    write(root, "web/Dockerfile.prod", "FROM node:20 AS build\nFROM nginx AS runtime\nARG NODE_ENV\n")
    write(root, "tools/cli.Dockerfile", "FROM alpine\nARG MODE\n")
    write(root, "worker/Containerfile", "FROM python:3.12\n")
    return root


def test_compose_builds_come_first_with_their_context_args_target_and_repository(repo):
    survey = survey_repository(Runner(environ={}), repo)
    by_path = {r.path: r for r in survey.recipes}
    assert [r.path for r in survey.recipes][:3] == [
        "api/Dockerfile",
        "web/Dockerfile.prod",
        "tools/cli.Dockerfile",
    ]
    web = by_path["web/Dockerfile.prod"]
    assert (web.context, web.dockerfile, web.target, web.repository) == (
        "web/",
        "Dockerfile.prod",
        "runtime",
        "storefront",
    )
    assert web.build_args == (("NODE_ENV", "production"),) and web.origin == "compose.yaml services.web.build"
    cli = by_path["tools/cli.Dockerfile"]
    assert (cli.context, cli.dockerfile, cli.build_args) == (
        ".",
        "tools/cli.Dockerfile",
        (("MODE", "release"),),
    )
    assert by_path["api/Dockerfile"].repository == "shop-api"
    assert "worker/Containerfile" in by_path and by_path["worker/Containerfile"].origin == ""
    notes = "\n".join(survey.notes)
    assert "services.web.build.args.NPM_TOKEN: looks like a secret; left out" in notes
    assert "services.web.build.args.FROM_ENV: no value" in notes
    assert "services.cli.build.args.BARE: no value" in notes
    assert (
        "services.remote.build: the context https://github.com/x/y.git#main is not in this repository"
        in notes
    )
    assert "ignored" not in notes and "nowhere" not in notes


def test_init_writes_a_table_from_the_compose_file_that_loads(repo, capsys):
    assert main(["init", str(repo)]) == 0
    out = capsys.readouterr().out
    assert "Dockerfile: web/Dockerfile.prod (from compose.yaml services.web.build)" in out
    images = load_images(repo, read_tool_table(repo))
    assert set(images) == {"api", "web", "cli", "worker"}
    web = images["web"]
    assert web.dockerfile == repo / "web" / "Dockerfile.prod" and web.target == "runtime"
    assert web.build_args == {"NODE_ENV": "production"} and web.repository == "storefront"
    assert images["cli"].context == repo and images["cli"].build_args == {"MODE": "release"}


def test_one_compose_file_per_folder_in_compose_order():
    files = ["a/docker-compose.yml", "a/compose.yml", "docker-compose.yaml", "b/docker-compose.yaml"]
    assert preferred(files) == ["a/compose.yml", "b/docker-compose.yaml", "docker-compose.yaml"]
