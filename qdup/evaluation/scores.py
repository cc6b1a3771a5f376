"""Per-pair test similarities of an evaluation, kept so that a later gate can pair two models on the same rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

TEST_SCORES_FILE = "test_scores.parquet"


def write_test_scores(path: Path, similarity: np.ndarray, labels: np.ndarray) -> None:
    """Similarities and labels in the test split's row order (written to a temp, then renamed)."""
    table = pa.table({"similarity": np.asarray(similarity, dtype=np.float64), "is_duplicate": np.asarray(labels, dtype=np.int64)})
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


def read_test_scores(path: Path) -> np.ndarray:
    """The similarities `write_test_scores` wrote, in the test split's row order."""
    return pq.read_table(path, columns=["similarity"]).column("similarity").to_numpy()
