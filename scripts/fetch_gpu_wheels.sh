#!/usr/bin/env bash
# Wheels the GPU machine lacks (Python 3.12, x86-64), into .whl/ (ignored by git, carried by the
# device tool): pydantic for plabel's config, datasets (and what it needs beyond that image) for
# the data stage. Run here, where PyPI is reachable; see README, "GPU check".
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
fetch() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" -d .whl "$@"; }
fetch pydantic pydantic-core annotated-types typing-inspection typing-extensions
fetch datasets dill multiprocess
ls -1 .whl
