"""List-valued dataset columns read straight from Arrow, without building Python lists.

Features keep their token-level columns (input ids, offsets) as ragged lists. Turning those into
Python objects row by row costs more than the numeric work done on them in prediction and
post-processing, so both read Arrow's flat buffers: one array of every row's items back to back,
with each row's start and length.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def arrow_table(dataset, columns: list[str]):
    """Those columns as one pyarrow Table (respects any row selection on the dataset)."""
    if getattr(dataset, "_indices", None) is None:  # no row selection: the backing table, no copies
        return dataset.data.table.select(columns)
    return dataset.select_columns(columns).with_format("arrow")[:]


class Ragged:
    """One list column: `values` flat (items of a nested list, such as an offset pair, become rows
    of a 2-D array), `lengths` and `starts` per row."""

    def __init__(self, column):
        # One chunk as it is: `combine_chunks` would copy it.
        column = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
        # `value_lengths` and `flatten` honour a sliced array's offset; copy=False keeps Arrow's int64
        # buffers as they are (megabytes per call).
        self.lengths = column.value_lengths().to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        items = column.flatten()
        # A list of lists, e.g. (start, end) pairs, all of one size.
        nested = isinstance(items, (pa.ListArray, pa.LargeListArray, pa.FixedSizeListArray))
        values = (items.flatten() if nested else items).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        self.values = values.reshape(len(items), len(values) // max(len(items), 1)) if nested else values
        self.starts = np.concatenate(([0], np.cumsum(self.lengths)[:-1])).astype(np.int64, copy=False)

    @classmethod
    def of(cls, dataset, column: str) -> Ragged:
        return cls(arrow_table(dataset, [column]).column(column))

    def padded(self, rows: np.ndarray, width: int, fill: int) -> np.ndarray:
        """Rows `rows` as a (len(rows), width) int64 array, each left-aligned, `fill` after its end."""
        n = self.lengths[rows]
        out = np.full((len(rows), width), fill, dtype=np.int64)
        # Item i of row j sits at `starts[j] + i`; in the batch's row-major order it is item
        # `before_j + i`, where before_j counts the items of the batch's earlier rows.
        before = np.cumsum(n) - n
        take = np.repeat(self.starts[rows] - before, n) + np.arange(n.sum())
        out[np.arange(width) < n[:, None]] = self.values[take]
        return out
