"""Per-pair similarities of an evaluation (test and calibration), kept so that a later gate can pair two models on the same rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

TEST_SCORES_FILE = "test_scores.parquet"
CALIBRATION_SCORES_FILE = "calibration_scores.parquet"


def write_test_scores(
    path: Path, similarity: np.ndarray, labels: np.ndarray, qid1: np.ndarray | None = None, qid2: np.ndarray | None = None
) -> None:
    """Similarities and labels in the split's row order (written to a temp, then renamed).

    With the question ids (qid1, qid2) the file alone gives the cluster bootstrap's groups.
    """
    columns = {"similarity": np.asarray(similarity, dtype=np.float64), "is_duplicate": np.asarray(labels, dtype=np.int64)}
    if qid1 is not None and qid2 is not None:
        columns |= {"qid1": np.asarray(qid1, dtype=np.int64), "qid2": np.asarray(qid2, dtype=np.int64)}
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.table(columns), tmp)
    tmp.replace(path)


def read_test_scores(path: Path) -> np.ndarray:
    """The similarities `write_test_scores` wrote, in the split's row order."""
    return pq.read_table(path, columns=["similarity"]).column("similarity").to_numpy()
