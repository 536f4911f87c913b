#!/usr/bin/env bash
# Prepares `.whl/` for `python -m bench.gpu` on a lent GPU machine (the `device` tool), run here first.
#
# Those machines are bare and offline: their python3 has torch, transformers, tokenizers,
# huggingface-hub, pyarrow, pandas, numpy, pyyaml, tqdm and accelerate, but not datasets or
# pydantic, and an older transformers than ours. A call carries at most 64 MiB, and the default
# model's weights alone are 91 MB, so only its config and tokenizer travel (bench.gpu then trains
# the same architecture from random weights: speed depends on shapes, not values).
#
# Then, in one device call (carry: [".whl"], timeout_s: 540):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#     --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit;
#   nvidia-smi -L; PYTHONUNBUFFERED=1 python3 -m bench.gpu --model-files .whl/minilm \
#     --json $OUT/gpu.json 2>&1 | tee $OUT/log
# If datasets refuses the machine's pyarrow (it needs >= 24), add a pyarrow wheel (about 45 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV_PY=${VENV_PY:-.venv/bin/python}
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir -p .whl

version() { "$VENV_PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
# The versions the tests ran with here; their own pure-python needs that the machine lacks.
specs=(
  "datasets==$(version datasets)" "transformers==$(version transformers)"
  "pydantic==$(version pydantic)" "pydantic-core==$(version pydantic-core)"
  "dill==$(version dill)" "multiprocess==$(version multiprocess)"
  "annotated-types" "typing-inspection" "typing-extensions"
)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${specs[@]}"

model_dir=$("$VENV_PY" -c "from qa_lib.modeling import resolve_model; print(resolve_model('all-MiniLM-L6-v2'))")
mkdir -p .whl/minilm
for f in config.json tokenizer.json tokenizer_config.json vocab.txt special_tokens_map.json; do
  [ -f "$model_dir/$f" ] && cp "$model_dir/$f" .whl/minilm/
done
du -sh .whl
ls .whl
