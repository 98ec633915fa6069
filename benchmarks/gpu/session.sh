#!/usr/bin/env bash
# Issue 12's GPU checks, as stages that each fit a time budget, for a machine lent for a few minutes.
#
#     bash benchmarks/gpu/session.sh STAGE...     # stages: tests suite notebook bench cli big
#
# Each stage writes its log to $OUT (default: runs/gpu) and stops at its own timeout, so a slow stage costs its
# budget, not the session; the logs of what finished come back either way. Run from the repository root, with the
# wheels of benchmarks/gpu/wheels.sh in .whl/ (installed into /tmp/site when present). On a machine without CUDA
# every stage still runs on the CPU (SCALE=tiny, BENCH_PRESET=tiny keep it short): that is how it is tested here.
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
SCALE=${SCALE:-small}                # the chapters' scale in the notebook stage
BENCH_PRESET=${BENCH_PRESET:-base}   # bench_gpu.py's paper preset
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLM_PRIMER_DEVICE=auto
if [ "${WHEELS:-1}" = 1 ] && ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi

stage() {  # stage NAME SECONDS COMMAND...: run it under a timeout, log to $OUT/NAME.log, report the time and status
    local name=$1 budget=$2 start rc
    shift 2
    start=$(date +%s)
    timeout --kill-after=10 "$budget" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    echo "stage $name: rc=$rc in $(( $(date +%s) - start )) s (budget $budget s)" | tee -a "$OUT/summary.txt"
}

{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
    "$PY" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name() if torch.cuda.is_available() else '', '| transformers', transformers.__version__)"
} >>"$OUT/summary.txt" 2>&1

for s in "$@"; do
    case $s in
        # the tests that failed with a GPU visible, the sync-free step, the compile paths: all on the GPU
        tests) stage tests 120 "$PY" -m pytest -q -p no:cacheprovider -x tests/test_gpu_paths.py \
                   tests/test_training_trainer.py tests/test_checkpoint_trainer.py tests/test_distributed_ddp.py \
                   tests/test_utils.py tests/test_contrastive_models.py tests/test_training_cli.py -rs ;;
        # everything else that runs without the book, the browser and the packages the device lacks
        suite) stage suite 240 "$PY" -m pytest -q -p no:cacheprovider -n 8 --continue-on-collection-errors \
                   --ignore-glob='tests/test_book*' tests -rs ;;
        # chapter 02 at the GPU scale, run as a script (the percent-format .py is the chapter's code)
        notebook) stage notebook 180 env VLM_PRIMER_SCALE="$SCALE" "$PY" notebooks/02_contrastive.py ;;
        # our CLIP and SigLIP against transformers at the paper preset, and the small CLIP step with CUDA graphs
        bench) stage bench 300 "$PY" benchmarks/bench_gpu.py --preset "$BENCH_PRESET" \
                   --device "$("$PY" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')" \
                   ${BENCH_ARGS:-} ;;
        # the train CLI at the paper shape with CUDA graphs: its throughput line (samples/s, tokens/s, data_wait, MFU)
        cli) stage cli 120 "$PY" -m vlm_primer.train clip --preset "$BENCH_PRESET" --precision bf16 \
                 --compile-mode reduce-overhead --steps 40 --log-every 20 --batch-size "${CLI_BATCH:-256}" \
                 --no-progress ;;  # MFU from the table's H200 peak: no --peak-tflops
        # the 7B-shaped recipes never run on a GPU: three LoRA steps each (full DPO at 7B would not fit: policy,
        # reference, gradients and AdamW state)
        big) stage big 420 bash -c "set -e
               $PY -m vlm_primer.train llava --preset $BENCH_PRESET --stage 2 --peft lora --steps 3 --log-every 1 \
                   --batch-size 4 --precision bf16 --no-progress
               $PY -m vlm_primer.train dpo --preset $BENCH_PRESET --peft lora --steps 3 --log-every 1 --batch-size 2 \
                   --precision bf16 --no-progress
               $PY -m vlm_primer.train video_llava --preset $BENCH_PRESET --peft lora --steps 3 --log-every 1 \
                   --batch-size 2 --precision bf16 --no-progress" ;;
        *) echo "unknown stage $s (stages: tests suite notebook bench cli big)" | tee -a "$OUT/summary.txt" ;;
    esac
done
cat "$OUT/summary.txt"
