#!/usr/bin/env bash
# The GPU check, for a fresh device machine (torch preinstalled, this repository copied, nothing downloadable), run
# from the repository root; it finishes inside 8 minutes (each part has its own timeout):
#   1. the pack benchmark (benchmarks/precision.py --device cuda) at n = 1, 8, 16: fp32 and bf16, vmap and loop;
#   2. a 2-generation `popvae train --device cuda` of 8 members on synthetic data;
# and writes both, with nvidia-smi's view and the targets (n = 8 packed within 1.5x one member's step, n = 16 within
# 2x), to benchmarks/results/population-gpu.json.
#
#   benchmarks/gpu.sh                  # on the GPU machine
#   benchmarks/gpu.sh --cpu-dry-run    # here, on a CPU: the same steps at a tiny size, JSON to a temporary folder
#
# popvae need not be installed (benchmarks/device_env.sh; Ray and pydantic from benchmarks/device_wheels.sh). A part
# that cannot run (a missing module, no GPU) is recorded in the JSON with its error, and the other part still runs.
set -u
cd "$(dirname "$0")/.."
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
. benchmarks/device_env.sh

if [ "${1:-}" = "--cpu-dry-run" ]; then
  DEVICE=cpu
  PACK_ARGS=(--members 1 2 --steps 1 --repeats 1 --generation-members 2 --generation-steps 2 --generation-batches 64
             --matmul-size 256 --skip amx profile generation)
  TRAIN_ARGS=(--members 2 --epochs 2 --steps-per-epoch 2 --batch-size 16)
  OUT=${OUT:-${TMPDIR:-/tmp}/population-gpu-dry-run.json}
else
  DEVICE=cuda
  PACK_ARGS=(--members 1 8 16 --steps 10 --repeats 3 --generation-members 8 --generation-steps 20 --skip amx)
  TRAIN_ARGS=(--members 8 --epochs 2 --steps-per-epoch 50 --batch-size 128)
  OUT=${OUT:-benchmarks/results/population-gpu.json}
fi


started=$(date +%s)
timeout 270 "$PY" -m benchmarks.precision --device "$DEVICE" "${PACK_ARGS[@]}" --out "$WORK/pack.json" \
  >"$WORK/pack.log" 2>&1
echo $? >"$WORK/pack.rc"

train_started=$(date +%s)
timeout 150 "$PY" -m popvae.cluster.cli train --dataset synthetic --device "$DEVICE" --select-on train \
  "${TRAIN_ARGS[@]}" --run-dir "$WORK/run" --quiet >"$WORK/train.log" 2>&1
echo $? >"$WORK/train.rc"
echo $(( $(date +%s) - train_started )) >"$WORK/train.seconds"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >"$WORK/smi.txt" 2>/dev/null || true

"$PY" - "$WORK" "$OUT" "$DEVICE" "$(( $(date +%s) - started ))" <<'EOF'
import json
import sys
from pathlib import Path

work, out, device, seconds = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])


def read(name, default=None):
    path = work / name
    return path.read_text().strip() if path.exists() else default


def tail(name):
    return (read(name) or "").splitlines()[-15:]


result = {"benchmark": "gpu.sh", "device": device, "nvidia_smi": read("smi.txt") or None, "wall_seconds": seconds}
pack_rc = int(read("pack.rc", "1"))
if pack_rc == 0:
    pack = json.loads(read("pack.json"))
    result["pack"] = pack
    steps = pack["steps"]
    one = steps.get("1")
    ratios = {}
    for n in [k for k in steps if k != "1"]:
        for variant in ("fp32_vmap", "fp32_loop", "bf16_vmap", "bf16_loop"):
            if one is not None:
                ratios[f"n{n}_{variant}_over_one_member"] = (steps[n][variant]["step_s"]["median"]
                                                            / one[variant]["step_s"]["median"])
    result["pack_step_over_one_member"] = ratios
    best = {n: min(ratios.get(f"n{n}_{v}_over_one_member", float("inf")) for v in ("fp32_vmap", "bf16_vmap"))
            for n in ("8", "16")}
    result["targets"] = {"n8_packed_within_1.5x_one_member": best["8"] <= 1.5 if "8" in steps else None,
                         "n16_packed_within_2x_one_member": best["16"] <= 2.0 if "16" in steps else None,
                         "best_vmap_ratio": best}
else:
    result["pack"] = {"failed": pack_rc, "log_tail": tail("pack.log")}
train_rc = int(read("train.rc", "1"))
result["train"] = {"command": "popvae train --dataset synthetic --device " + device + " --select-on train "
                   + "(see benchmarks/gpu.sh TRAIN_ARGS)", "exit_code": train_rc, "seconds": int(read("train.seconds", "0"))}
if train_rc == 0:
    run = work / "run"
    result["train"]["summary"] = json.loads((run / "summary.json").read_text())
    status = json.loads((run / "status.json").read_text())
    result["train"]["generation_seconds"] = status.get("generation_seconds")
    config = json.loads((run / "config.json").read_text())
    result["train"]["precision"], result["train"]["pack_mode"] = config["precision"], config["pack_mode"]
else:
    result["train"]["log_tail"] = tail("train.log")
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps(result, indent=2) + "\n")
print(json.dumps({k: result[k] for k in ("device", "wall_seconds") if k in result} | {
    "pack_ok": pack_rc == 0, "train_ok": train_rc == 0, "targets": result.get("targets"), "written": str(out)}, indent=2))
EOF
