#!/usr/bin/env bash
# Prepares `.whl/` for `python -m bench.gpu` on a lent GPU machine (the `device` tool), run here first.
#
# Those machines are bare and offline: their python3 (3.12) has torch, tokenizers, huggingface-hub,
# pandas, numpy, pyyaml, tqdm and accelerate, but not datasets or pydantic, an older transformers
# than ours, and a pyarrow of unknown version (datasets needs >= 24). A call carries at most
# 64 MiB: the wheels, pyarrow's alone 55 MB, do not fit, so they are unpacked here, pyarrow's
# unused parts (Flight, its tests and C++ headers) dropped, and the rest packed as one
# `.whl/site.tar.xz` (about 35 MB). The default model's weights (91 MB) do not fit either, so only
# its config and tokenizer travel: bench.gpu then trains the same architecture from random
# weights, as speed depends on shapes, not values.
#
# Then one device call runs everything: `bash bench/gpu_run.sh` with carry [".whl"] (that script
# unpacks the site, keeps the machine's pyarrow when it is new enough, runs `python -m bench.gpu`
# and leaves gpu.json and the log in $OUT; `bash bench/gpu_run.sh --quick` checks it here first).
# `python3 -m bench.gpu_profile --model-files .whl/minilm` breaks a padded step down further.
# The H200 of 2026-11-27 had pyarrow 25.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV_PY=${VENV_PY:-.venv/bin/python}
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir -p .whl/wheels

version() { "$VENV_PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
# The versions the tests ran with here, and those of their needs that the machine lacks or may
# hold too old (transformers checks regex's and, from 5.25, huggingface-hub>=2.4's version on import,
# and that hub is built on httpx2; accelerate rides along to match that hub; datasets caps fsspec).
specs=(
  "datasets==$(version datasets)" "transformers==$(version transformers)"
  "pydantic==$(version pydantic)" "pydantic-core==$(version pydantic-core)"
  "dill==$(version dill)" "multiprocess==$(version multiprocess)" "pyarrow==$(version pyarrow)"
  "fsspec==$(version fsspec)" "regex==$(version regex)" "xxhash==$(version xxhash)"
  "huggingface-hub==$(version huggingface-hub)" "accelerate==$(version accelerate)"
  "httpx2==$(version httpx2)" "httpcore2==$(version httpcore2)" "truststore==$(version truststore)"
  "anyio==$(version anyio)" "h11==$(version h11)" "idna==$(version idna)"
  "annotated-types" "typing-inspection" "typing-extensions"
)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl/wheels "${specs[@]}"

site=$(mktemp -d)
for w in .whl/wheels/*.whl; do unzip -q -o "$w" -d "$site"; done
# Nothing here imports Flight; lib.so links substrait, acero and dataset, so those stay.
rm -rf "$site"/pyarrow/{tests,include} "$site"/pyarrow/libarrow_flight* "$site"/pyarrow/_flight*
find "$site" \( -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' \) -delete
tar -C "$site" -cf - . | xz -T0 -6 > .whl/site.tar.xz
rm -rf "$site" .whl/wheels

model_dir=$("$VENV_PY" -c "from qa_lib.modeling import resolve_model; print(resolve_model('all-MiniLM-L6-v2'))")
mkdir -p .whl/minilm
for f in config.json tokenizer.json tokenizer_config.json vocab.txt special_tokens_map.json; do
  [ -f "$model_dir/$f" ] && cp "$model_dir/$f" .whl/minilm/
done
du -sh .whl
ls .whl .whl/minilm
