"""Prefect's cache records beside a shared store, so a cache hit on one worker is one on all.

Prefect reads and writes result records through a `WritableFileSystem` block; this one keeps them
under `<store>/prefect-results/` with the store's own S3 client (one endpoint, one credential
chain, botocore's retries). A folder store keeps them in its own `prefect-results/` folder.
"""

from __future__ import annotations

import functools
from pathlib import Path

import anyio.to_thread
from prefect.filesystems import WritableFileSystem

from qa_lib.hashing import hash_json
from qa_lib.store import S3Store, Store


class StoreResultStorage(WritableFileSystem):
    """Result records as objects under `<location>/prefect-results/` (an s3:// store)."""

    _block_type_name = "QA Pipeline Store Results"
    location: str

    @property
    def _store(self) -> S3Store:
        return _s3_store(self.location)

    def read_path(self, path: str, **_) -> bytes:
        store = self._store
        return store.s3.get_object(Bucket=store.bucket, Key=store._key("prefect-results", path))["Body"].read()

    def write_path(self, path: str, content: bytes, **_) -> str:
        store = self._store
        store.s3.put_object(Bucket=store.bucket, Key=store._key("prefect-results", path), Body=content)
        return path

    async def aread_path(self, path: str) -> bytes:
        return await anyio.to_thread.run_sync(self.read_path, path)

    async def awrite_path(self, path: str, content: bytes) -> str:
        return await anyio.to_thread.run_sync(self.write_path, path, content)


@functools.lru_cache(maxsize=4)
def _s3_store(location: str) -> S3Store:
    return S3Store(location)


@functools.lru_cache(maxsize=4)
def _storage(location: str) -> WritableFileSystem:
    # Prefect wants result storage saved server-side, so any worker can load it by reference; the
    # block holds the store's location only (credentials come from each worker's environment).
    if location.startswith("s3://"):
        block = StoreResultStorage(location=location)
    else:
        from prefect.filesystems import LocalFileSystem

        block = LocalFileSystem(basepath=str(Path(location) / "prefect-results"))
    block.save("qa-store-" + hash_json(location)[:16], overwrite=True)
    return block


def result_storage_for(store: Store):
    """Where Prefect keeps a stage task's cache record: beside the store's own entries. A shared
    store's records are then shared too; a folder store's live and go with it (Prefect's default,
    ~/.prefect/storage, is often read-only in a pod, and each task then logged a traceback and lost
    its cache record)."""
    return _storage(store.location)
