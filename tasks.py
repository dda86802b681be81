"""moltbuild tasks: `invoke --list`. The logic lives in the moltbuild package; this file composes."""

import sys
from pathlib import Path

# Let `invoke` work from a plain checkout whose dependencies are installed.
sys.path.insert(0, str(Path(__file__).parent / "src"))

from invoke import Collection

from moltbuild.cli import build, core, dev, env, gh, hints, k8s, kaniko, registry

ns = Collection()
for module in (core, build, registry, dev):
    for task in module.ns.tasks.values():
        ns.add_task(task)
ns.add_collection(env.ns)
ns.add_collection(k8s.ns)
ns.add_collection(kaniko.ns)
ns.add_collection(gh.ns)
hints.install(ns)  # a "did you mean" after invoke's own parse errors
