"""Errors the user can act on. Each names the problem and where it is."""

from __future__ import annotations

import contextlib
import errno
import shutil
from typing import Iterator

# A full disk or an exhausted quota: no retry frees the space, and a retried copy only adds another
# partial one.
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def first_line(exc: BaseException, limit: int = 300) -> str:
    """A library's error as one line for a message: its first line, cut at `limit` characters."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:limit]


def shown_id(value: object, limit: int = 48) -> str:
    """An example's id as a message names it: as it is when it is short printable text; otherwise its
    first `limit` characters with the unprintable ones escaped, and its length. An id is the data's own
    text: one with a newline or a terminal's control codes broke the one error line, or rewrote it."""
    text = str(value)
    if len(text) <= limit and text.isprintable():
        return text
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return shown if len(text) <= limit else f"{shown}... ({len(text):,} characters)"


class QAPipelineError(Exception):
    """Base class: a deterministic failure that retrying will not fix."""


class ConfigError(QAPipelineError):
    pass


class DataError(QAPipelineError):
    """A data source that cannot be read or does not hold valid QA examples."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        if len(problems) == 1:
            super().__init__(f"{source}: {problems[0]}")
            return
        # The first line stands alone (the CLI prints only it); the list follows for the log.
        shown = problems[:20]
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"{source}: {len(problems)} problems, the first: {problems[0]}\n  " + "\n  ".join(shown)
                         + more)


class ModelError(QAPipelineError):
    pass


class StorageError(QAPipelineError):
    """A store, target or folder that cannot be used as asked (bad URI, bucket, credentials,
    endpoint, or no space left): retrying will not help."""


class OutOfMemory(ConfigError):
    """The model and batch asked for do not fit in this machine's memory (a GPU's, mostly): the same
    settings run out again on a retry, so they are named with what to lower instead."""


def is_out_of_memory(exc: BaseException | None) -> bool:
    """Whether `exc` (or what caused it: a compiled step wraps it) is torch running out of memory:
    `torch.OutOfMemoryError` on a GPU, the CPU allocator's RuntimeError where the kernel refused an
    allocation."""
    # Causes only, not __context__: an error raised while handling one is not it.
    return any(any(c.__name__ == "OutOfMemoryError" for c in type(e).__mro__)
               or "DefaultCPUAllocator: can't allocate memory" in str(e) for e in _chain(exc, context=False))


def _chain(exc: BaseException | None, context: bool = True) -> Iterator[BaseException]:
    """`exc` and what caused it, each once: its `__cause__`, else (with `context`) its `__context__`."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or (exc.__context__ if context else None)


@contextlib.contextmanager
def placing_model(stage: str, model, device) -> Iterator[None]:
    """`model` moved to `device` in the block: weights that do not fit there at all are one
    `OutOfMemory` naming their size, since no batch or window setting helps and a retry runs out
    again (torch's message names only the bytes of one allocation)."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - only running out of memory is renamed
        if not is_out_of_memory(exc):
            raise
        count = sum(p.numel() for p in model.parameters())
        size = sum(p.numel() * p.element_size() for p in model.parameters())
        raise OutOfMemory(f"{stage}: the model does not fit in {memory_name(device)}: {count / 1e6:,.1f}M "
                          f"parameters, {size / 2**30:.2f} GiB of weights; use a device with more memory or a "
                          f"smaller model") from exc


def memory_name(device) -> str:
    """`device`'s memory in a message: "GPU memory (NVIDIA H200, 139.8 GiB)", or "memory" on the CPU."""
    if getattr(device, "type", device) != "cuda":
        return "memory"
    import torch

    props = torch.cuda.get_device_properties(device)
    return f"GPU memory ({props.name}, {props.total_memory / 2**30:.1f} GiB)"


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether `exc` (or what caused it) is a write that ran out of space. Libraries say so in their
    own ways: an `OSError`, `shutil.Error`'s list of failed copies, safetensors' "os error 28"."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in _NO_SPACE:
            return True
        if isinstance(e, shutil.Error):
            if any(f"[Errno {code}]" in str(why) for *_, why in _copy_failures(e) for code in _NO_SPACE):
                return True
        elif "No space left on device" in str(e) or "Disk quota exceeded" in str(e):
            return True
    return False


def _copy_failures(exc: shutil.Error) -> list[tuple]:
    failures = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
    return [f for f in failures if isinstance(f, tuple)]


@contextlib.contextmanager
def naming_full_disk(where: str) -> Iterator[None]:
    """Turn running out of space inside the block into one `StorageError` naming `where`."""
    try:
        yield
    except Exception as exc:
        if is_disk_full(exc):
            raise StorageError(f"{where}: no space left on device") from exc
        raise
