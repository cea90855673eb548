#!/usr/bin/env bash
# The paper's Table 1 on a GPU: the population (n = 8, the authors' dynamics, selection on training loss) and the
# annealed baseline at batch 128 on Fashion-MNIST, for as many of the paper's 100 epochs as BUDGET_S seconds allow,
# sized on the same machine by a 2-epoch run of both. Two device calls, because Ray's wheel and the dataset do not fit
# one call's 64 MiB together (prepare both here first: benchmarks/device_wheels.sh, then
# `mkdir -p .data && cp /usr/share/datasets/fashion-mnist/*.gz .data/`; both folders are git-ignored):
#   benchmarks/gpu_table1.sh install            # call 1, carry .whl: the wheels into .devsite, kept on the warm machine
#   benchmarks/gpu_table1.sh run [BUDGET_S]      # call 2 at once (warm), carry .data: sizing, then Table 1 (420 s)
#   benchmarks/gpu_table1.sh run 60 --cpu-dry-run   # here: the same steps on the smoke preset (synthetic data)
# `run` writes to $OUT (default benchmarks/results/reproduction-fashion-mnist-paper-gpu): the report
# (reproduction.md, reproduction.json, its plots) and gpu-table1.json (the sizing, the epochs chosen, nvidia-smi).
set -u
cd "$(dirname "$0")/.."
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
if [ "${1:-}" = "install" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target .devsite .whl/*.whl || exit
  . benchmarks/device_env.sh
  "$PY" -c "import ray, pydantic, torch, popvae.population.driver; print('ray', ray.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  exit
fi
[ "${1:-}" = "run" ] || { echo "usage: benchmarks/gpu_table1.sh install | run [BUDGET_S] [--cpu-dry-run]" >&2; exit 2; }
BUDGET=${2:-420}
. benchmarks/device_env.sh
if ! "$PY" -c "import ray, pydantic" 2>/dev/null; then
  echo "gpu_table1: Ray or pydantic is not importable: run 'benchmarks/gpu_table1.sh install' (carrying .whl) first, on this same warm machine" >&2
  exit 1
fi
if [ "${3:-}" = "--cpu-dry-run" ]; then
  PRESET=(--preset smoke) DATA=() OUT=${OUT:-$WORK/out}
else
  PRESET=(--preset paper --dataset fashion-mnist) DATA=(--data-root .data) OUT=${OUT:-benchmarks/results/reproduction-fashion-mnist-paper-gpu}
fi
ONLY=(--only population-reference,baseline)
REPRO=("$PY" -m popvae.cluster.cli reproduce "${PRESET[@]}" "${DATA[@]}" "${ONLY[@]}")
mkdir -p "$OUT"
started=$(date +%s)
"${REPRO[@]}" --epochs 2 --out "$WORK/sizing" --quiet >"$WORK/sizing.log" 2>&1 || { tail -20 "$WORK/sizing.log"; exit 1; }
EPOCHS=$("$PY" - "$WORK/sizing/reproduction.json" "$BUDGET" "$(( $(date +%s) - started ))" <<'PY'
"""The epochs that fit: the sizing's whole wall time less its 2 epochs (Ray's start, each arm's start-up and scoring,
the report) once, plus both arms' median generations per epoch, within the budget; at most the paper's 100."""
import json
import sys

facts, budget, sizing_s = json.load(open(sys.argv[1])), float(sys.argv[2]), float(sys.argv[3])
arms = ("population-reference", "baseline")
per_epoch = sum(facts["runs"][a]["generation_seconds_median"] for a in arms)
fixed = sizing_s - 2 * per_epoch
print(max(1, min(100, int((budget - fixed) / per_epoch))))
json.dump({"sizing_seconds": sizing_s, "per_epoch_s": per_epoch, "fixed_s": fixed, "budget_s": budget,
           "generation_seconds_median": {a: facts["runs"][a]["generation_seconds_median"] for a in arms}},
          open(sys.argv[1] + ".sizing", "w"))
PY
) || exit 1
echo "sizing: $(cat "$WORK/sizing/reproduction.json.sizing"); training $EPOCHS epochs"
timeout $(( BUDGET * 2 + 120 )) "${REPRO[@]}" --epochs "$EPOCHS" --out "$WORK/table1" --report-dir "$WORK/report" \
  >"$WORK/table1.log" 2>&1
rc=$?
cp "$WORK"/report/reproduction.md "$WORK"/report/reproduction.json "$WORK"/report/learning_curves.png "$OUT"/ 2>/dev/null
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >"$WORK/smi.txt" 2>/dev/null || true
"$PY" - "$WORK" "$OUT" "$EPOCHS" "$rc" "$(( $(date +%s) - started ))" <<'PY'
import json
import sys
from pathlib import Path

work, out, epochs, rc, seconds = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
smi = (work / "smi.txt").read_text().strip() if (work / "smi.txt").is_file() else ""
result = {"benchmark": "gpu_table1.sh", "nvidia_smi": smi or None, "epochs": epochs, "exit_code": rc,
          "wall_seconds": seconds, "sizing": json.loads((work / "sizing" / "reproduction.json.sizing").read_text()),
          "log_tail": (work / "table1.log").read_text().splitlines()[-15:]}
(out / "gpu-table1.json").write_text(json.dumps(result, indent=2) + "\n")
print(json.dumps({k: result[k] for k in ("epochs", "exit_code", "wall_seconds")} | {"written": str(out)}))
PY
exit $rc
