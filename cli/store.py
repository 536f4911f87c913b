"""`qa-pipeline store ls | gc`: what the store holds, and cleaning it."""

from __future__ import annotations

import math
import time

from qa_lib.sizes import human_size as _size


def _age(created: float) -> str:
    hours = max(0.0, time.time() - created) / 3600
    return f"{hours * 60:.0f} min" if hours < 1 else f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} d"


def _existing_store(location: str | None, cache: bool = True):
    """The store to list or clean, or one line on why there is none: listing an empty result for
    a mistyped folder (or `.qa-store` looked for in the wrong directory) would say "nothing there"
    about the wrong place."""
    from qa_lib.errors import ConfigError
    from qa_lib.store import open_store

    store = open_store(location)
    if store.remote:  # no credentials, no bucket, no endpoint: one line, not botocore's traceback
        store.check(cache=cache)
    elif not store.root.is_dir():
        what = "is not a folder" if store.root.exists() else "does not exist (a run that uses it creates it)"
        raise ConfigError(f"store {store.location} {what}; give --store or set QA_PIPELINE_STORE")
    return store


def ls(args) -> int:
    store = _existing_store(args.store, cache=False)  # listing downloads nothing
    entries = store.entries()
    keep = store.pinned()
    print(f"{'stage':<12} {'key':<24} {'size':>10} {'age':>9}  (store {store.location})")
    for e in entries:
        note = "  champion" if (e.stage, e.key) in keep else ""
        print(f"{e.stage:<12} {e.key:<24} {_size(e.size):>10} {_age(e.created):>9}{note}")
    print(f"{len(entries)} entries, {_size(sum(e.size for e in entries))}")
    return 0


def gc(args) -> int:
    from qa_lib.errors import ConfigError
    from qa_lib.store import collect_garbage, sweep_local_copies

    # nan compared false with every age, so it removed nothing and said so as if that were the answer.
    if not math.isfinite(args.older_than) or args.older_than < 0:
        raise ConfigError(f"--older-than: must be a number of days, 0 or more, got {args.older_than}")
    store = _existing_store(args.store)
    removed = collect_garbage(store, args.older_than, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for e in removed:
        print(f"{verb} {e.stage}/{e.key} ({_size(e.size)}, {_age(e.created)} old)")
    print(f"{verb} {len(removed)} entries, {_size(sum(e.size for e in removed))}")
    if store.remote:  # and this machine's downloaded copies, which only this machine can sweep
        swept = sweep_local_copies(store, args.older_than, dry_run=args.dry_run)
        for e in swept:
            print(f"{verb} the local copy of {e.stage}/{e.key} ({_size(e.size)}, unused for {_age(e.created)})")
        print(f"{verb} {len(swept)} local copies in {store.cache}, {_size(sum(e.size for e in swept))}")
    return 0
