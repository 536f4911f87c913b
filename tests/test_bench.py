import subprocess
import sys

from tests.conftest import ROOT


def test_quick_bench_runs_and_prints_every_figure(tmp_path):
    out = subprocess.run([sys.executable, "-m", "bench", "--quick", "--json", str(tmp_path / "b.json")], cwd=ROOT,
                         capture_output=True, text=True, timeout=600,
                         env={**__import__("os").environ, "PREFECT_HOME": str(tmp_path / "ph")})
    assert out.returncode == 0, out.stderr[-3000:]
    for label in ("feature building", "training throughput", "prediction throughput", "post-processing",
                  "peak RSS", "answers identical: True", "orchestration overhead", "cached rerun",
                  "end-to-end time", "time to the tutorial's F1"):
        assert label in out.stdout, label
    figures = __import__("json").loads((tmp_path / "b.json").read_text())
    assert figures["race_tutorial"]["steps"] == 2 and figures["race_ours"]["steps"] == 4
    assert figures["race_ours"]["checks"], "the finish line was never checked"
