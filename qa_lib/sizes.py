"""Byte counts as `store ls` and the transfer logs give them, and durations as progress lines do."""

from __future__ import annotations


def human_size(n: float) -> str:
    """812 B, 3.2 MB, 1.4 GB."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def in_files(sizes: list[int]) -> str:
    """What a transfer moves: 3.2 MB in 7 files, 18 B in 1 file."""
    return f"{human_size(sum(sizes))} in {len(sizes)} file{'' if len(sizes) == 1 else 's'}"


def human_duration(seconds: float) -> str:
    """45 s, 7 min, 2 h 5 min: a time left, to the precision it is known to."""
    if seconds < 120:
        return f"{max(seconds, 0):.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 120 else f"{minutes // 60} h {minutes % 60} min"
