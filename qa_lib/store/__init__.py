"""Where stages live: a local folder (the embedded default) or `s3://bucket/prefix` for a fleet.

Both backends offer the same operations: `has`, `writing` (a stage appears whole or not at all),
`fetch` (a local folder with the stage's files), checkpoints, a `lease` that holds across the
workers that share the store, and housekeeping (`entries`, `remove`, `pin`). A store knows
nothing of models or fingerprints; `qa_lib.plan` decides the keys.
"""

from __future__ import annotations

import functools
import os
import time

from qa_lib.store.base import Entry, Lease
from qa_lib.store.local import LocalStore
from qa_lib.store.s3 import S3Store

DEFAULT_STORE = ".qa-store"

Store = LocalStore | S3Store


def store_location(explicit: str | None = None) -> str:
    """The store to use: the explicit one, else $QA_PIPELINE_STORE, else `.qa-store` here."""
    return explicit or os.environ.get("QA_PIPELINE_STORE") or DEFAULT_STORE


@functools.lru_cache(maxsize=8)
def _open(location: str, cache: str | None) -> Store:
    return S3Store(location, cache) if location.startswith("s3://") else LocalStore(location)


def open_store(location: str | None = None) -> Store:
    """One store object per location and process, so clients and download counts are shared."""
    location = store_location(location)
    if not location.startswith("s3://"):
        location = str(LocalStore(location).root)
    return _open(location, os.environ.get("QA_PIPELINE_CACHE"))


# A writer may still be uploading an attempt this young, whatever age the user asks for; and a
# worker's local copy used this recently may be in use (or still downloading).
ORPHAN_MIN_AGE_S = 3600


def collect_garbage(store: Store, older_than_days: float, dry_run: bool = False) -> list[Entry]:
    """Remove entries older than the given age, except the pinned (a champion's model) and the
    ones under a live lease (a training in progress), and the leftovers of writers that died
    (uploads or staging folders no entry names, at least an hour old). Returns what was (or
    would be) removed; a leftover's key reads `<key>/<attempt>`."""
    keep = store.pinned() | store.leased()
    now = time.time()
    cutoff = now - older_than_days * 86400
    doomed = [e for e in store.entries() if e.created < cutoff and (e.stage, e.key) not in keep]
    orphans = store.orphans(min(cutoff, now - ORPHAN_MIN_AGE_S))
    if not dry_run:
        for entry in doomed:
            store.remove(entry.stage, entry.key)
        for entry in orphans:
            store.remove_orphan(entry)
    return doomed + orphans


def sweep_local_copies(store: Store, older_than_days: float, dry_run: bool = False) -> list[Entry]:
    """This machine's downloaded copies of a shared store's stages unused for the given age (at
    least an hour), removed or listed; nothing for a folder store, which keeps no copies."""
    if not store.remote:
        return []
    return store.sweep_cache(max(older_than_days * 86400, ORPHAN_MIN_AGE_S), dry_run=dry_run)


__all__ = ["DEFAULT_STORE", "Entry", "Lease", "LocalStore", "S3Store", "Store", "collect_garbage", "open_store",
           "store_location", "sweep_local_copies"]
