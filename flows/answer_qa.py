"""answer_qa: questions + a trained model → features → predict → answers, saved whole (no scores).

The evaluation's stages up to the answers, keyed the same way: the same questions file and model
answered again reuse every stage from the store, on any worker that shares it.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from qa_lib.answer_inputs import answers_dir, default_answer_model, default_answers_output, questions_config
from qa_lib.config import DataSource, PipelineConfig
from qa_lib.modeling import resolve_model
from qa_lib.plan import answer_keys
from qa_lib.progress import configure_progress
from qa_lib.publish.manifest import code_version
from tasks.answers import save_answers
from tasks.data import load_questions
from tasks.evaluate import post_process, predict
from tasks.features import build_features
from tasks.library_logs import send_library_logs
from tasks.preflight import preflight_answers
from tasks.report import report_answers
from tasks.stage import pipeline_run


# Validated in the flow, as train_qa's and evaluate_qa's: a mistake made in the UI form is one line.
@flow(name="answer_qa", validate_parameters=False)
def answer_qa(config: PipelineConfig = PipelineConfig(), questions: DataSource | str | None = None,
              model: str | None = None, output: str | None = None, store_root: str | None = None) -> dict:
    """Answer every question of a file with a trained model; save the answers as one JSON object
    (id → answer text, "" for no answer: the official predictions format, which `qa-pipeline score` reads).

    Args:
        config: The windows, precision and post-processing settings (n_best_size, max_answer_length,
            version_2_with_negative and its null threshold) apply.
        questions: The questions: a path or s3:// URI (SQuAD JSON, JSONL, CSV, Parquet, a dataset
            folder), with its split, columns and limit as a data source's (default: config.eval_data).
            Answers in it are neither needed nor checked; ids default to row numbers.
        model: Model folder, a publish target's champion (its folder, or s3://bucket/prefix/champion)
            or s3:// store model (default: the champion of config.publish_target if it is set, else
            config.model).
        output: A file path or s3://bucket/key for the answers (default:
            <output_dir>/answers/predictions.json); written whole or not at all.
        store_root: Where stages are kept: a folder or s3://bucket/prefix shared by a pool's workers
            (default: $QA_PIPELINE_STORE, else .qa-store).
    """
    config = questions_config(PipelineConfig.coerce(config), questions)
    configure_progress()
    send_library_logs()
    model = model or default_answer_model(config)
    output = output or default_answers_output(config)
    with pipeline_run(store_root) as run:
        with run.timed("preflight"):
            preflight_answers(config, model, output, run.store.location)
            model_dir = resolve_model(model)
            run.keys.update(answer_keys(config, model_dir))
        data = load_questions(config)
        features = build_features(data, config, model_dir)
        logits = predict(model_dir, features, config)
        predictions = post_process(data, features, logits, config)
        with run.timed("save answers"):
            saved = save_answers(run.store.location, predictions, output)
    summary = {"model": model, "model_dir": model_dir, "questions": config.eval_data.path,
               "questions_key": run.keys["questions"], "output": output,
               "predictions_dir": run.store.uri("predictions", predictions["key"]),  # with the n-best lists
               "store": run.store.location, "code_version": code_version(), "timings_s": run.timings}
    out = str(answers_dir(config))
    report_answers("answer_qa", saved, summary, out)
    get_run_logger().info("%d answers (%d with no answer) saved to %s", saved["answers"], saved["no_answer"], output)
    return {"answers": saved["answers"], "no_answer": saved["no_answer"], **summary, "artifacts_dir": out}
