"""Shared fixtures: the real SQuAD samples and tiny random models built from a real tokenizer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("QA_PIPELINE_NO_PROGRESS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two workers on CI's two cores: torch's default of a thread per core in each
    # would oversubscribe them (its OpenMP threads spin while they wait for each other).
    os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
_SHARED = ROOT.parent / "shared" / "data" / "squad"
SQUAD = _SHARED if _SHARED.is_dir() else ROOT / "data" / "squad"
TRAIN_V1 = SQUAD / "train-v1.1.sample.json"
DEV_V1 = SQUAD / "dev-v1.1.super_bowl_50.json"
DEV_V2 = SQUAD / "dev-v2.0.sample.json"


def build_tiny_model(folder: Path, padding_side: str = "right") -> Path:
    """A 2-layer, 32-wide BERT QA model with the real MiniLM tokenizer, saved as a model folder."""
    import torch
    from transformers import BertConfig, BertForQuestionAnswering

    from qa_lib.modeling import load_tokenizer

    tokenizer = load_tokenizer("all-MiniLM-L6-v2")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512)
    BertForQuestionAnswering(config).save_pretrained(folder)
    tokenizer.padding_side = padding_side
    tokenizer.save_pretrained(folder)
    tokenizer.padding_side = "right"
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tokenizer():
    from qa_lib.modeling import load_tokenizer

    return load_tokenizer("all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def train_examples():
    from qa_lib.data import load_examples

    return load_examples(str(TRAIN_V1))


@pytest.fixture(scope="session")
def dev_v1_examples():
    from qa_lib.data import load_examples

    return load_examples(str(DEV_V1))


@pytest.fixture(scope="session")
def dev_v2_examples():
    from qa_lib.data import load_examples

    return load_examples(str(DEV_V2))


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A real `prefect server start` on loopback; this process talks to it through PREFECT_API_URL."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    from tests.prefect_server import PrefectServer

    server = PrefectServer(tmp_path_factory.mktemp("prefect-home")).start()
    try:
        with temporary_settings({PREFECT_API_URL: server.url, PREFECT_HOME: str(server.home)}):
            yield server
            # Logs still queued for the server go now, not to a stopped server ("Error logging to API").
            from prefect.logging.handlers import APILogHandler

            APILogHandler().flush()
    finally:
        server.stop()


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item):
    """Prefect's console handlers write to the sys.stderr of when they were made, which inside a
    `capsys` test is that test's stream, closed once it ends: the next test's Prefect logs then
    failed with "--- Logging error ---" and a traceback (which tests checking for one saw, when run
    in some orders). Point them at the stream in place between tests."""
    import logging
    import sys

    try:
        from prefect.logging.handlers import PrefectConsoleHandler
    except ImportError:
        return
    loggers = [logging.getLogger(), *(x for x in logging.Logger.manager.loggerDict.values() if isinstance(x, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, PrefectConsoleHandler):
                handler.stream = sys.stderr  # not setStream(): it flushes the old, closed stream
                handler.console.file = sys.stderr


# The slowest modules first: `make test` hands whole modules to its two workers in collection order
# (`--dist loadscope --no-loadscope-reorder`), and a slow module started last runs alone at the end.
SLOW_FIRST = ("test_deployments.py", "test_fleet.py", "test_cli.py", "test_flows.py", "test_train.py", "test_bench.py",
              "test_families.py", "test_store.py", "test_disk_full.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(Path(item.nodeid.split("::")[0]).name, len(rank)))
