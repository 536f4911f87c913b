"""SQuAD v1.1 / v2.0 as a local `evaluate` metric module, computed by `qa_lib.metrics`.

    import evaluate
    from qa_lib.evaluate_squad import MODULE_PATH
    squad = evaluate.load(MODULE_PATH)                       # v1.1 rules
    squad_v2 = evaluate.load(MODULE_PATH, "v2")              # v2.0 rules
    squad.compute(predictions=[{"id": "1", "prediction_text": "x"}],
                  references=[{"id": "1", "answers": {"text": ["x"], "answer_start": [0]}}])

v2 predictions also carry `no_answer_probability` (null odds), used for `best_exact` / `best_f1`.
"""

import datasets
import evaluate

from qa_lib.metrics import squad_v1, squad_v2

_DESCRIPTION = "Official SQuAD v1.1 (exact_match, f1) and v2.0 (exact, f1, HasAns/NoAns, best_*) scores."
_CITATION = "Rajpurkar et al., SQuAD: 100,000+ Questions for Machine Comprehension of Text (2016); Know What You Don't Know (2018)."
_INPUTS = "predictions: list of {id, prediction_text[, no_answer_probability]}; references: list of {id, answers{text, answer_start}}"


class EvaluateSquad(evaluate.Metric):
    def _info(self):
        pred = {"id": datasets.Value("string"), "prediction_text": datasets.Value("string")}
        if self.config_name == "v2":
            pred["no_answer_probability"] = datasets.Value("float64")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_INPUTS,
            features=datasets.Features({
                "predictions": pred,
                "references": {
                    "id": datasets.Value("string"),
                    "answers": datasets.Sequence({"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}),
                },
            }),
        )

    def _compute(self, predictions, references):
        preds = {p["id"]: p["prediction_text"] for p in predictions}
        dataset = [{"paragraphs": [{"qas": [
            {"id": r["id"], "answers": [{"text": t} for t in r["answers"]["text"]]} for r in references
        ]}]}]
        if self.config_name == "v2":
            na = {p["id"]: p["no_answer_probability"] for p in predictions}
            return dict(squad_v2(dataset, preds, na))
        return squad_v1(dataset, preds)
