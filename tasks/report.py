"""Run artifacts: metrics table, loss/F1 plot, markdown summary."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from qa_lib.folders import write_text_whole

METRIC_ORDER = ("exact_match", "f1", "exact", "total", "HasAns_exact", "HasAns_f1", "HasAns_total",
                "NoAns_exact", "NoAns_f1", "NoAns_total", "best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh")


def metrics_rows(metrics: dict) -> list[dict]:
    keys = [k for k in METRIC_ORDER if k in metrics] + [k for k in metrics if k not in METRIC_ORDER]
    return [{"metric": k, "value": round(metrics[k], 4) if isinstance(metrics[k], float) else metrics[k]} for k in keys]


def loss_f1_png(log_history: list[dict], metrics: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in log_history if "loss" in h]
    losses = [h["loss"] for h in log_history if "loss" in h]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2), gridspec_kw={"width_ratios": [3, 1]})
    ax1.plot(steps, losses, marker=".")
    ax1.set(xlabel="optimizer step", ylabel="training loss", title="loss")
    names = [k for k in ("exact_match", "exact", "f1", "HasAns_f1", "NoAns_f1") if k in metrics]
    ax2.bar(names, [metrics[k] for k in names], color="tab:green")
    ax2.set(ylim=(0, 100), title="eval (%)")
    ax2.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def run_tables(summary: dict) -> list[str]:
    """The summary's "Run" table (where things are) and its "Timings" table, as markdown lines."""
    md = ["", "## Run", "", "| | |", "| --- | --- |"]
    md += [f"| {k} | `{v}` |" for k, v in summary.items() if k != "timings_s"]
    if "timings_s" in summary:
        md += ["", "## Timings (s)", "", "| step | seconds |", "| --- | --- |"]
        md += [f"| {k} | {v:.2f} |" for k, v in summary["timings_s"].items()]
    return md


@task(name="report")
def report(title: str, metrics: dict, log_history: list[dict] | None, summary: dict, out_dir: str) -> dict:
    """Create the metrics table, plot and summary artifacts; save the plot and summary with the run."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    create_table_artifact(metrics_rows(metrics), key="qa-metrics", description=f"{title}: SQuAD metrics")
    md = [f"# {title}", "", "| metric | value |", "| --- | --- |"]
    md += [f"| {r['metric']} | {r['value']} |" for r in metrics_rows(metrics)]
    if log_history:
        png = loss_f1_png(log_history, metrics, out / "loss_f1.png")
        # Artifacts hold links, not bytes: embed the PNG as a data URL and name the saved file.
        data_url = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()
        md += ["", f"![loss and F1]({data_url})", "", f"Plot saved at `{png}`"]
    text = "\n".join(md + run_tables(summary))
    # A dashboard or script polling the output folder reads these: never half of one.
    write_text_whole(out / "summary.md", text)
    write_text_whole(out / "metrics.json", json.dumps(metrics, indent=2))
    create_markdown_artifact(text, key="qa-run-summary", description=f"{title}: run summary")
    return {"summary": str(out / "summary.md")}


@task(name="report-answers")
def report_answers(title: str, saved: dict, summary: dict, out_dir: str) -> dict:
    """A markdown summary of an answer_qa run (how many answered, where they are, the first few),
    as an artifact and beside the run's other files."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = [f"# {title}", "", f"{saved['answers']:,} questions answered ({saved['no_answer']:,} with no answer), "
          f"saved to `{saved['output']}`.", "", "| id | answer |", "| --- | --- |"]
    md += [f"| `{k}` | {_cell(v) or '*(no answer)*'} |" for k, v in saved["sample"].items()]
    if saved["answers"] > len(saved["sample"]):
        md += ["", f"... and {saved['answers'] - len(saved['sample']):,} more."]
    text = "\n".join(md + run_tables(summary))
    write_text_whole(out / "summary.md", text)
    create_markdown_artifact(text, key="qa-answers", description=f"{title}: answers")
    return {"summary": str(out / "summary.md")}


def _cell(text: str) -> str:
    """An answer in a table row: it is the context's text, which may hold the table's separators."""
    return " ".join(text.split()).replace("|", "\\|")
