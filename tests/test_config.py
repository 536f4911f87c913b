import pytest

from qa_lib.config import PipelineConfig
from qa_lib.errors import ConfigError


def test_defaults_and_yaml_with_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train_data: {path: a.json}\nlearning_rate: 1.0e-4\n")
    cfg = PipelineConfig.from_yaml(path, ["max_length=128", "doc_stride=32", "train_data.limit=10", "precision=bf16"])
    assert cfg.learning_rate == 1e-4
    assert (cfg.max_length, cfg.doc_stride, cfg.train_data.limit, cfg.precision) == (128, 32, 10, "bf16")
    assert PipelineConfig().n_best_size == 20


@pytest.mark.parametrize(
    "raw, field",
    [
        ({"max_length": 128, "doc_stride": 128}, "doc_stride"),
        ({"eval_max_length": 128, "eval_doc_stride": 200}, "eval_doc_stride"),
        ({"max_length": -5}, "max_length"),
        ({"max_answer_length": 0}, "max_answer_length"),
        ({"precision": "fp8"}, "precision"),
        ({"lr_scheduler_type": "cosin"}, "lr_scheduler_type"),
        ({"learning_rate": "fast"}, "learning_rate"),
        ({"lerning_rate": 1e-4}, "lerning_rate"),
        ({"train_data": {"path": "x", "limit": -1}}, "train_data.limit"),
        ({"hub_repo_id": "my org/model"}, "hub_repo_id"),
        ({"hub_repo_id": "org/team/model"}, "hub_repo_id"),
        # NaN passes every bound; as a threshold it would answer every v2 question.
        ({"null_score_diff_threshold": float("nan")}, "null_score_diff_threshold"),
        ({"promote_margin": float("inf")}, "promote_margin"),
        ({"seed": -1}, "seed"),  # numpy's seeding takes 0 to 2**32 - 1, and fails only once training starts
        ({"seed": 2**32}, "seed"),
        # A local folder: it made one named `s3:` and wrote the run there.
        ({"output_dir": "s3://bucket/run"}, "output_dir: a URI, not a local folder"),
    ],
)
def test_impossible_values_name_the_field(raw, field):
    with pytest.raises(ConfigError) as info:
        PipelineConfig.parse(raw, where="test.yaml")
    assert field in str(info.value)
    assert "test.yaml" in str(info.value)


def test_a_check_across_fields_reads_as_one_sentence():
    """It names its fields itself; it was prefixed by a made-up field, '(config): doc_stride (128) ...'."""
    with pytest.raises(ConfigError) as info:
        PipelineConfig.parse({"max_length": 128, "doc_stride": 128}, where="test.yaml")
    assert str(info.value) == "invalid configuration in test.yaml: doc_stride (128) must be smaller than max_length (128)"


@pytest.mark.parametrize("raw, message", [
    ({"lerning_rate": 1e-4}, "lerning_rate: unknown key; did you mean learning_rate?"),
    ({"train_data": {"path": "t.json", "lmit": 5}}, "train_data.lmit: unknown key; did you mean train_data.limit?"),
    ({"frobnicate": 1}, "frobnicate: unknown key (every key: docs/configuration.md)"),
])
def test_an_unknown_key_is_named_with_the_key_it_is_likely_a_typo_of(raw, message):
    """Pydantic's own words were "Extra inputs are not permitted"."""
    with pytest.raises(ConfigError) as info:
        PipelineConfig.parse(raw, where="test.yaml")
    assert str(info.value) == f"invalid configuration in test.yaml: {message}"


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_length: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        PipelineConfig.from_yaml(bad)
    with pytest.raises(ConfigError, match="not found"):
        PipelineConfig.from_yaml(tmp_path / "nope.yaml")
    # A folder given for the config was an IsADirectoryError, exit 1.
    with pytest.raises(ConfigError, match=rf"^{tmp_path}: a folder, not a config file"):
        PipelineConfig.from_yaml(tmp_path)
    with pytest.raises(ConfigError, match="key=value"):
        PipelineConfig.from_yaml(_ok(tmp_path), ["max_length"])


def test_yaml_errors_give_the_place_not_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: x\nlearning_rate: [SECRET-VALUE\nseed: 2\n")
    with pytest.raises(ConfigError) as info:
        PipelineConfig.from_yaml(bad)
    msg = str(info.value)
    assert msg.startswith(f"{bad}: not valid YAML at line 3, column 5: ")
    assert "SECRET-VALUE" not in msg and "\n" not in msg


def test_a_key_given_twice_is_refused_with_its_line(tmp_path):
    twice = tmp_path / "twice.yaml"
    twice.write_text("learning_rate: 1.0e-4\ntrain_data:\n  path: a.json\n  limit: 5\n  limit: 50\n")
    with pytest.raises(ConfigError) as info:
        PipelineConfig.from_yaml(twice)
    assert str(info.value) == f"{twice}: not valid YAML at line 5, column 3: 'limit' is given twice in one mapping"
    twice.write_text("learning_rate: 1.0e-4\ntrain_data: {path: a.json}\nlearning_rate: 3.0e-5\n")
    with pytest.raises(ConfigError, match="line 3, column 1: 'learning_rate' is given twice"):
        PipelineConfig.from_yaml(twice)
    # The same key in two mappings, and a key that overrides a merged one, are not given twice.
    merged = tmp_path / "merged.yaml"
    merged.write_text("train_data: &d {path: a.json, limit: 5}\neval_data: {<<: *d, path: b.json}\n")
    cfg = PipelineConfig.from_yaml(merged)
    assert (cfg.eval_data.path, cfg.eval_data.limit, cfg.train_data.path) == ("b.json", 5, "a.json")


def test_a_bad_override_is_named_as_the_override(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("learning_rate: 0.001\ntrain_data: {path: t.json}\n")
    with pytest.raises(ConfigError, match=r"in the override learning_rate=\.\.\. \(on top of .*good.yaml\): "
                                          "learning_rate: Input should be greater than 0"):
        PipelineConfig.from_yaml(good, ["learning_rate=-1"])
    with pytest.raises(ConfigError, match=r"override train_data.limit=.*train_data.limit: Input should be greater"):
        PipelineConfig.from_yaml(good, ["train_data.limit=0"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: -1\n")
    with pytest.raises(ConfigError) as info:  # the file's own value: the file is named, not an override
        PipelineConfig.from_yaml(bad, ["seed=3"])
    assert str(info.value).startswith(f"invalid configuration in {bad}: learning_rate")
    # A cross-field check (no field of its own) is named as the override its message names.
    with pytest.raises(ConfigError, match=r"^invalid configuration in the override doc_stride=\.\.\. \(on top of "
                                          r".*good.yaml\): doc_stride \(300\) must be smaller"):
        PipelineConfig.from_yaml(good, ["seed=3", "doc_stride=300"])
    with pytest.raises(ConfigError, match=r"^invalid configuration in the override max_steps=\.\.\. "):
        PipelineConfig.from_yaml(good, ["max_steps=0"])
    good.write_text("learning_rate: 0.001\ntrain_data: {path: t.json}\nmax_steps: 0\n")
    with pytest.raises(ConfigError, match=rf"^invalid configuration in {good}: max_steps must be"):
        PipelineConfig.from_yaml(good, ["seed=3"])


def test_a_column_mapping_to_none_of_our_columns_is_a_config_error(tmp_path):
    """`columns: {qestion: query}` was found only when the run read the data (after Prefect had
    started, or its temporary server): it is the config's own mistake, named with the nearest name."""
    good = tmp_path / "good.yaml"
    good.write_text("train_data: {path: t.jsonl, columns: {question: query, answer_text: reply}}\n")
    assert PipelineConfig.from_yaml(good).train_data.columns == {"question": "query", "answer_text": "reply"}
    with pytest.raises(ConfigError) as info:
        PipelineConfig.from_yaml(good, ["train_data.columns.qestion=q"])
    assert str(info.value) == (f"invalid configuration in the override train_data.columns.qestion=... (on top of "
                               f"{good}): train_data.columns: 'qestion' is not one of our columns (id, title, "
                               "context, question, answers, answer_text, answer_start); did you mean question?")
    good.write_text("eval_data: {path: t.jsonl, columns: {query: question}}\n")
    with pytest.raises(ConfigError, match=rf"^invalid configuration in {good}: eval_data.columns: 'query' is not one "
                                          r"of our columns \(id, .*answer_start\)$"):
        PipelineConfig.from_yaml(good)


def _ok(tmp_path):
    p = tmp_path / "ok.yaml"
    p.write_text("{}")
    return p


def test_shipped_configs_load():
    from tests.conftest import ROOT

    for path in (ROOT / "configs").glob("*.yaml"):
        PipelineConfig.from_yaml(path)


def test_unquoted_on_and_off_mean_on_and_off(tmp_path):
    """YAML 1.1 reads `on` and `off` as booleans: `compile: on` was refused ("Input should be 'auto',
    'on' or 'off'"), in the file and as an override alike."""
    path = tmp_path / "c.yaml"
    path.write_text("train_data: {path: a.json}\ncompile: on\n")
    assert PipelineConfig.from_yaml(path).compile == "on"
    assert PipelineConfig.from_yaml(path, ["compile=off"]).compile == "off"
    assert PipelineConfig.from_yaml(path, ["compile=auto"]).compile == "auto"
    with pytest.raises(ConfigError, match="compile: Input should be 'auto', 'on' or 'off'"):
        PipelineConfig.from_yaml(path, ["compile=2"])


def test_the_configuration_reference_is_current_and_gives_each_default():
    """docs/configuration.md is what the model renders today, and each row's default, read back as
    YAML (as a config file would give it), is the model's default for that key."""
    import re
    from pathlib import Path

    import yaml

    from qa_lib.config import DataSource
    from qa_lib.config_reference import render

    page = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    assert page == render(), "stale: python -m qa_lib.config_reference > docs/configuration.md"
    rows = dict(re.findall(r"^\| `([a-z_0-9<>.]+)` \| [^|]*(?:\\\|[^|]*)* \| ([^|]+) \|", page, re.M))
    defaults = PipelineConfig(model="m")
    expected = {**{k: getattr(defaults, k) for k in PipelineConfig.model_fields if k != "model"},
                **{f"<source>.{k}": f.get_default(call_default_factory=True) for k, f in DataSource.model_fields.items()
                   if not f.is_required()}}
    for key, value in expected.items():
        shown = rows.pop(key)
        if shown == "none":
            assert value is None, key
        elif shown == "empty":
            assert value is not None and not value, key
        else:
            assert yaml.safe_load(shown.strip("`")) == value, (key, shown)
    assert rows == {"model": "`sentence-transformers/all-MiniLM-L6-v2`", "<source>.path": "required"}


def test_a_data_source_given_as_its_path_alone(tmp_path):
    """`eval_data: data/dev.json` (YAML or override) is the source with that path and every other key
    at its default: the same config, so the same stage keys, as the mapping form."""
    from qa_lib.modeling import resolve_model
    from qa_lib.plan import run_keys
    from tests.conftest import DEV_V1, DEV_V2, TRAIN_V1

    (tmp_path / "short.yaml").write_text(f"train_data: {TRAIN_V1}\neval_data: {DEV_V1}\n")
    (tmp_path / "long.yaml").write_text(f"train_data:\n  path: {TRAIN_V1}\neval_data:\n  path: {DEV_V1}\n")
    short, long = PipelineConfig.from_yaml(tmp_path / "short.yaml"), PipelineConfig.from_yaml(tmp_path / "long.yaml")
    assert short == long and short.eval_data.limit is None and short.eval_data.columns == {}
    model = resolve_model(short.model)
    assert run_keys(short, model, training=True) == run_keys(long, model, training=True)
    swapped = PipelineConfig.from_yaml(tmp_path / "long.yaml", [f"eval_data={DEV_V2}"])
    assert swapped.eval_data.path == str(DEV_V2)
    with pytest.raises(ConfigError, match="train_data"):
        PipelineConfig.from_yaml(tmp_path / "long.yaml", ["train_data=12"])
    # A path alone, then one of the source's other keys: it was "eval_data is not a mapping".
    limited = PipelineConfig.from_yaml(tmp_path / "short.yaml", ["eval_data.limit=5"])
    assert limited.eval_data.path == str(DEV_V1) and limited.eval_data.limit == 5
    swapped = PipelineConfig.from_yaml(tmp_path / "long.yaml", [f"eval_data={DEV_V2}", "eval_data.limit=5"])
    assert swapped.eval_data.path == str(DEV_V2) and swapped.eval_data.limit == 5
    (tmp_path / "empty.yaml").write_text(f"train_data: {TRAIN_V1}\neval_data:\n")
    named = PipelineConfig.from_yaml(tmp_path / "empty.yaml", [f"eval_data.path={DEV_V2}"])
    assert named.eval_data.path == str(DEV_V2)
