"""`moltbuild init`: adopt moltbuild in an existing repository.

recipes (the root, the Dockerfiles) and deployment (the kustomization's images and the workloads
that run them) gather the facts; matching pairs Dockerfiles with images and names them; survey
holds what was found and says it; pyproject (tomlkit) and changes plan and write the files;
command.adopt runs it all for `moltbuild init`."""
