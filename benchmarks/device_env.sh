# Sourced by the device scripts (benchmarks/gpu.sh, benchmarks/gpu_table1.sh), from the repository root: sets PY and
# makes popvae importable without installing it. The packages benchmarks/device_wheels.sh fetched, installed into
# .devsite by `benchmarks/gpu_table1.sh install`, go on the path; without popvae installed, this checkout is imported
# through a temporary package folder of symbolic links (the pyproject's package-dir mapping) under $WORK.
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if [ -d .devsite ]; then
  export PYTHONPATH="$PWD/.devsite${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! "$PY" -c "import popvae.population.pack" 2>/dev/null; then
  mkdir -p "$WORK/shim/popvae"
  ln -sf "$PWD"/popvae/*.py "$WORK/shim/popvae/"
  for d in models attacks population cluster; do ln -sfn "$PWD/$d" "$WORK/shim/popvae/$d"; done
  export PYTHONPATH="$WORK/shim:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # benchmarks/ as a package
