"""`python -m bench.checkpoint_upload`: training with its checkpoints uploaded to an S3 store
while it waits for each upload, and with the uploads in the background.

Same model (all-MiniLM-L6-v2's weights: a checkpoint is its weights and optimizer state, about
170 MB), data, seed and `save_steps`; `CheckpointToStore(background=...)` the only difference,
in alternating order. The last checkpoint is waited for in both. Two links to the store (moto's
server on loopback): direct, where the upload is CPU work (boto3, and moto, a Python process)
that competes with training for this machine's 2 cores, and through a proxy that passes
`--link-mb-s` (default 40 MB/s) shared by every connection, asleep: a network-bound upload,
as from a GPU machine, whose training leaves the CPU mostly free.
`--quick`: a few steps, to check that it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QA_PIPELINE_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
CREDS = {"AWS_ACCESS_KEY_ID": "bench-key-id", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_DEFAULT_REGION": "us-east-1"}


def train_once(config, feats, store, background: bool, tmp: Path) -> dict:
    from qa_lib.checkpoint_sync import CheckpointToStore
    from qa_lib.train import fine_tune

    upload = CheckpointToStore(store, "model", f"k-{background}-{tmp.name}", background=background)
    before_io, before_bytes = store.io_s, store.uploaded
    t = time.perf_counter()
    fine_tune(config, feats, tmp, callbacks=[upload])
    return {"wall_s": time.perf_counter() - t, "upload_s": store.io_s - before_io,
            "uploaded_mb": (store.uploaded - before_bytes) / 2**20}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.checkpoint_upload")
    p.add_argument("--quick", action="store_true", help="a few steps, to check that it runs")
    p.add_argument("--rounds", type=int, default=3, help="runs of each kind and link, alternating")
    p.add_argument("--link-mb-s", type=float, default=40.0, help="the limited link's bandwidth")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import boto3

    from qa_lib.config import PipelineConfig
    from qa_lib.data import load_examples
    from qa_lib.features import build_train_features
    from qa_lib.modeling import load_tokenizer
    from qa_lib.store import S3Store
    from tests.s3_services import FaultProxy, MotoServer

    steps, save_steps, rounds = (4, 2, 1) if args.quick else (30, 5, args.rounds)
    config = PipelineConfig.parse({
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "train_data": {"path": str(ROOT / "data/squad/train-v1.1.sample.json")},
        "max_length": 256, "doc_stride": 96, "per_device_train_batch_size": 8,
        "max_steps": steps, "save_steps": save_steps, "save_total_limit": 1, "output_dir": "unused"})
    tokenizer = load_tokenizer(config.model)
    examples = load_examples(config.train_data, default_split="train").select(range(steps * 8))
    feats = build_train_features(examples, tokenizer, config.max_length, config.doc_stride)

    moto = MotoServer().start()
    proxy = FaultProxy(moto.port, drop=0, slow_down=0, error=0, link_mb_s=args.link_mb_s).start()
    os.environ.update(CREDS)
    out = {"date": time.strftime("%Y-%m-%d"), "steps": steps, "save_steps": save_steps, "rounds": rounds, "links": {}}
    try:
        boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1").create_bucket(Bucket="bench")
        for link, url in (("loopback", moto.url), (f"{args.link_mb_s:g} MB/s", proxy.url)):
            os.environ["QA_S3_ENDPOINT_URL"] = url
            runs = out["links"][link] = []
            with tempfile.TemporaryDirectory(prefix="qa-bench-upload-") as scratch:
                store = S3Store("s3://bench/ckpt", Path(scratch) / "cache")
                for i in range(rounds):
                    for background in ((False, True) if i % 2 == 0 else (True, False)):
                        run = train_once(config, feats, store, background, Path(scratch) / f"run{i}-{background}")
                        runs.append({"background": background, **run})
                        print(f"{link}, {'background' if background else 'waited':>10}: {run['wall_s']:.1f} s "
                              f"training, {run['upload_s']:.1f} s in uploads ({run['uploaded_mb']:.0f} MB)", flush=True)
    finally:
        proxy.stop()
        moto.stop()
    print(f"{steps} steps, a checkpoint every {save_steps}, medians of {rounds}:")
    for link, runs in out["links"].items():
        median = {}
        for kind in (False, True):
            walls = sorted(r["wall_s"] for r in runs if r["background"] is kind)
            median[kind] = walls[len(walls) // 2]
        saved = median[False] - median[True]
        out["links"][link] = {"runs": runs, "waited_s": median[False], "background_s": median[True]}
        print(f"  {link}: {median[False]:.1f} s waiting for uploads, {median[True]:.1f} s with them in the "
              f"background ({saved:+.1f} s, {100 * saved / median[False]:.1f} % of the waited run)")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
