#!/usr/bin/env bash
# The GPU checks as one short script (about 8 minutes on an H100): the CUDA tests, then the
# benchmarks whose figures README's "On a GPU" section gives, each report written to OUT_DIR.
#
#   bash bench/gpu_checks.sh [OUT_DIR]            # default OUT_DIR: gpu_reports
#   DEVICE=cpu BATCH=2 SIZE=64 ITERS=2 PAIRS=4 bash bench/gpu_checks.sh /tmp/dry   # a dry run
#
# Needs the project and its test dependencies importable (torch with CUDA, lpips, pytest). Each
# step has its own time limit, so a slow or failing step does not take the others with it.
set -u
out="${1:-gpu_reports}"
device="${DEVICE:-cuda}"
common=(--device "$device" --batch "${BATCH:-16}" --size "${SIZE:-256}" --iters "${ITERS:-20}")
mkdir -p "$out"
cd "$(dirname "$0")/.." || exit 1
export PYTHONUNBUFFERED=1 PERCEPTUAL_LOSS_TEST_DEVICE="$device"

step() {  # step SECONDS NAME COMMAND...: run with a time limit, keep going on failure
    local seconds="$1" name="$2"
    shift 2
    echo "== $name"
    timeout "$seconds" "$@" || echo "!! $name failed or timed out (exit $?)"
}

step 120 "CUDA tests" python -m pytest -q -p no:cacheprovider -o addopts=-ra tests/test_cuda.py
step 120 "losses" python bench/bench_losses.py "${common[@]}" --out "$out/losses.md"
step 240 "compiled LPIPS" python bench/bench_losses.py "${common[@]}" \
    --cases lpips-alex,lpips-alex-compiled,lpips-squeeze,lpips-squeeze-compiled --out "$out/losses_compiled.md"
step 180 "backbones" python bench/bench_backbones.py "${common[@]}" --out "$out/backbones.md"
step 90 "criterion" python bench/bench_criterion.py "${common[@]}" --out "$out/criterion.md"
# The evaluator's GPU target is >= 1,000 LPIPS-alex pairs/s on 256 px PNGs, from files: 1,024 pairs,
# batches of 64 (the table's floor and decoding rows say where the time goes).
step 300 "evaluator" python bench/bench_evaluate.py --device "$device" --pairs "${PAIRS:-1024}" --batch-size 64 \
    --repeats 3 --out "$out/evaluate.md"
step 90 "restoration losses" sh -c "python bench/bench_restoration.py --device '$device' > '$out/restoration.md'"
step 60 "profile" sh -c "python bench/profile_losses.py $(printf '%q ' "${common[@]}") \
    --cases style-vgg16,lpips-alex > '$out/profile.md'"
ls -l "$out"
