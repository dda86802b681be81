"""files.load_yaml: valid YAML the C loader refuses is read by the pure one (as kubectl reads it);
invalid YAML is still one line naming the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from moltbuild.errors import ConfigError
from moltbuild.files import load_yaml

FLOW_WITH_PORT = """\
spec:
  containers:
    - {name: web, image: 127.0.0.1:5000/x}
"""


@pytest.mark.parametrize("typ", ["safe", "base"])
def test_a_flow_mapping_with_a_registry_port_loads_as_kubectl_reads_it(tmp_path: Path, typ: str) -> None:
    path = tmp_path / "deployment.yml"
    path.write_text(FLOW_WITH_PORT)

    loaded = {"spec": {"containers": [{"name": "web", "image": "127.0.0.1:5000/x"}]}}
    assert load_yaml(path, typ=typ) == loaded
    assert load_yaml(path, typ=typ, multi=True, text="---\n" + FLOW_WITH_PORT) == [loaded]


def test_invalid_yaml_is_still_refused_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "deployment.yml"
    path.write_text("kind: Deployment\nspec: [a, {b: c\n")

    with pytest.raises(ConfigError) as caught:
        load_yaml(path)

    assert caught.value.message.startswith(f"{path}:")
    assert caught.value.message.endswith(": invalid YAML; fix the syntax")
