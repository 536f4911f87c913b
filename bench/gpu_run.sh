#!/usr/bin/env bash
# The one device call for the GPU figures (issue 15): `python -m bench.gpu` on a lent GPU machine.
#
# Here first, on the CPU, to check it runs end to end:   bash bench/gpu_run.sh --quick
# Then `bash bench/gpu_kit.sh` (wheels and the model's config/tokenizer into .whl/), and one call
# of the device tool: command "bash bench/gpu_run.sh", carry [".whl"], timeout_s 580. Everything
# the bench writes lands in $OUT (gpu.json, log), which comes back even if the call times out.
#
# Order: the SQuAD-sized job (~90k features, one epoch) and the bf16-vs-fp32 comparison first,
# then varlen attention against padded on the device (a forward pass: is the kernel right? the
# default model, then a small random ModernBERT whose sliding-window layers need the kernel's
# window_size), then (padded, packed with varlen attention, packed with a block mask; packed ones
# compiled) x two models, in that order so that running short costs the last variant rather than
# the second model; each 20 warm-up steps + 5 profiled + 30 s timed. Estimated (never yet run
# whole): 2-3 minutes for the job, 45 s to 100 s per measurement (compiling), so 9-12 minutes
# in all, more than a call holds. `--budget 520` (the call's 580 s, less unpacking and imports)
# skips each measurement that would not end in time, so the table is still printed; the JSON is
# rewritten after each step, so even a kill keeps what finished. `--variants padded,packed-varlen`
# or `--e2e-train 40000` shorten it.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 QA_PIPELINE_NO_PROGRESS=1
if [ "${1:-}" = "--quick" ]; then
  shift
  .venv/bin/python -m bench.gpu --quick --variants padded,packed,packed-varlen --json "$OUT/gpu.json" "$@" 2>&1 \
    | tee "$OUT/log"
  exit "${PIPESTATUS[0]}"
fi
mkdir -p /tmp/site && tar xJf .whl/site.tar.xz -C /tmp/site || exit 3
# The machine's own pyarrow when new enough for our datasets; else the carried one.
python3 -c 'import pyarrow as p,sys; print("machine pyarrow", p.__version__);
sys.exit(int(p.__version__.split(".")[0]) < 24)' && rm -rf /tmp/site/pyarrow /tmp/site/pyarrow-*.dist-info
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi -L
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
python3 -m bench.gpu --model-files .whl/minilm --variants padded,packed-varlen,packed --warm 20 --budget 520 \
  --json "$OUT/gpu.json" "$@" 2>&1 | tee "$OUT/log"
exit "${PIPESTATUS[0]}"
