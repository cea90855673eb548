#!/usr/bin/env bash
# The Python packages popvae needs that the GPU machines' image lacks, as wheels for its Python (3.12, x86-64), into
# .whl/ (git-ignored), for a device call to carry. The image has torch, torchvision, torchmetrics, numpy, pyarrow,
# matplotlib, rich, scipy, httpx, pyyaml, grpcio, protobuf, msgpack, aiohttp and the rest of Ray's own needs, but not
# Ray, pydantic, jsonschema, tensorboardX or FastAPI. Ray's wheel (79 MB) is over what a call carries (64 MiB with the
# working tree), so it is repacked without ray/jars (31 MB of Java support, which popvae never starts).
# The versions are the ones this checkout's .venv runs. Run here (package registries reachable):
#   benchmarks/device_wheels.sh            # then carry .whl; benchmarks/gpu_table1.sh installs it there
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${PYVER:-3.12}
VENV_PY=${VENV_PY:-.venv/bin/python}
NAMES=(ray jsonschema jsonschema-specifications referencing rpds-py pydantic pydantic-core annotated-types
       typing-inspection tensorboardX fastapi starlette uvicorn)
pinned=()
for name in "${NAMES[@]}"; do
  version=$("$VENV_PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
  pinned+=("$name==$version")
done
rm -rf .whl && mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "${pinned[@]}"
"$VENV_PY" - .whl <<'PY'
"""Repack Ray's wheel without ray/jars; its RECORD loses those lines (pip checks the hash of every file it installs)."""
import sys
import zipfile
from pathlib import Path

wheel = next(Path(sys.argv[1]).glob("ray-*.whl"))
slim = wheel.with_suffix(".slim")
with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as dst:
    for item in src.infolist():
        if item.filename.startswith("ray/jars/"):
            continue
        data = src.read(item)
        if item.filename.endswith(".dist-info/RECORD"):
            data = b"".join(line for line in data.splitlines(keepends=True) if not line.startswith(b"ray/jars/"))
        dst.writestr(item, data)
slim.replace(wheel)
PY
du -ch .whl/*.whl | tail -1
