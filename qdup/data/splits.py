"""Train/negatives/val/calibration/test splits of the validated data (positional or question-disjoint), written as Parquet."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from qdup.config import SPLIT_NAMES, SplitConfig
from qdup.data.graph import pair_components
from qdup.errors import ConfigError
from qdup.fileio import sha256_file

# train: the train region's duplicates; negatives: its non-duplicates (explicit hard negatives);
# val: the val region's duplicates (early stopping, learning-rate schedule); calibration: every pair
# of the calibration region (thresholds, the reranker); selection: the selection region's pairs with no
# question of an earlier region (the hybrid search, the default method, the served scorer are chosen on
# it); gate: the gate region's pairs with no question of any other training-range region (a version is
# judged against production on it); test: reported only.
SPLITS = SPLIT_NAMES
SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("qid1", pa.int64(), nullable=False),
        pa.field("qid2", pa.int64(), nullable=False),
        pa.field("question1", pa.string(), nullable=False),
        pa.field("question2", pa.string(), nullable=False),
        # Label convention: 1 = the two questions have the same intent (duplicate), 0 = not.
        pa.field("is_duplicate", pa.int8(), nullable=False),
    ]
)
COMPRESSION = "zstd"


def resolve_count(value: float, total: int) -> int:
    """A count (>= 1) is taken as is; a fraction (< 1) is a share of all rows."""
    return int(value) if value >= 1 else int(total * value)


def plan_splits(total: int, cfg: SplitConfig) -> tuple[int, int]:
    n_train = resolve_count(cfg.n_train, total)
    n_test = resolve_count(cfg.n_test, total)
    if n_train < 1 or n_test < 1:
        raise ConfigError(f"n_train={cfg.n_train} and n_test={cfg.n_test} leave an empty split of {total} rows")
    if n_train + n_test > total:
        raise ConfigError(
            f"the data has {total:,} rows, fewer than n_train + n_test = {n_train:,} + {n_test:,} = "
            f"{n_train + n_test:,}; pass smaller counts or fractions of the data, e.g. "
            f"--n-train 0.8 --n-test 0.2"
        )
    return n_train, n_test


def question_components(qid1: np.ndarray, qid2: np.ndarray) -> np.ndarray:
    """Each pair's connected component in the question graph (questions are nodes, every pair an edge).

    Pairs that share a question, directly or through other pairs, get the same label; labels are
    0..k-1 in order of first appearance.
    """
    pair_labels = pair_components(np.asarray(qid1, dtype=np.int64), np.asarray(qid2, dtype=np.int64))
    # Renumber by first appearance so that the labels do not depend on scipy's traversal order.
    return pd.factorize(pair_labels, sort=False)[0].astype(np.int64)


@dataclass(frozen=True)
class _Regions:
    """Cut positions in the training range: train [0, val_start), val [val_start, cal_start), calibration
    [cal_start, sel_start), selection [sel_start, gate_start), gate [gate_start, n)."""

    val_start: int
    cal_start: int
    sel_start: int
    gate_start: int
    val_cut_on_boundary: bool
    cal_cut_on_boundary: bool
    sel_cut_on_boundary: bool
    gate_cut_on_boundary: bool


def _snap(target: int, boundaries: np.ndarray, lo: int, hi: int) -> tuple[int, bool]:
    """The allowed cut in [lo, hi] nearest `target` (ties: the earlier one); `target` itself when none is allowed."""
    allowed = boundaries[(boundaries >= lo) & (boundaries <= hi)]
    if len(allowed) == 0:
        return target, False
    return int(allowed[np.argmin(np.abs(allowed - target))]), True


def _cut_regions(labels: np.ndarray, boundaries: np.ndarray, cfg: SplitConfig) -> _Regions:
    """Cut the training range (labels in its order) into its five regions, at `boundaries` where possible.

    The gate region is the last `gate_fraction` of the rows, the selection region the `selection_fraction`
    before it, the calibration region the `calibration_fraction` before that; of the duplicates before it,
    the last `val_fraction` start the val region. Cuts move to the nearest allowed boundary (a
    question-graph component's edge) that keeps every region usable; with none, the cut stays where it is.
    """
    total = len(labels)
    tail: dict[str, tuple[int, bool]] = {}
    end = total
    for name, fraction in (("gate", cfg.gate_fraction), ("selection", cfg.selection_fraction)):
        size = int(round(total * fraction))
        if size < 1 or end - size < 2:
            raise ConfigError(f"split.{name}_fraction={fraction} of a {total:,}-row training range leaves "
                              f"{'an empty ' + name + ' split' if size < 1 else 'nothing to train on'}")
        tail[name] = _snap(end - size, boundaries, 2, end - 1)
        if len(set(labels[tail[name][0] : end].tolist())) < 2:
            raise ConfigError(f"the {name} region (rows {tail[name][0]:,} to {end:,} of the training range) holds only one "
                              f"label; choosing and judging need both (raise split.{name}_fraction or n_train)")
        end = tail[name][0]
    labels = labels[:end]
    n = len(labels)
    n_cal = int(round(total * cfg.calibration_fraction))
    if n_cal < 1 or n_cal >= n:
        raise ConfigError(
            f"split.calibration_fraction={cfg.calibration_fraction} of a {n:,}-row training range leaves "
            f"{'an empty calibration split' if n_cal < 1 else 'nothing to train on'}"
        )
    dup = np.flatnonzero(labels == 1)
    target = n - n_cal
    # The non-calibration region must keep two duplicates (one for train, one for val).
    if int((dup < target).sum()) < 2:
        raise ConfigError(
            f"the first {target:,} rows of the {n:,}-row training range hold {int((dup < target).sum())} duplicate "
            f"pairs, too few for train and val before the calibration region (split.calibration_fraction="
            f"{cfg.calibration_fraction})"
        )
    cal_start, cal_ok = _snap(target, boundaries, int(dup[1]) + 1, n - 1)
    calibration = labels[cal_start:]
    if len(set(calibration.tolist())) < 2:
        raise ConfigError(
            f"the calibration region ({n - cal_start:,} rows before the selection region) holds only "
            f"{'duplicates' if calibration[0] == 1 else 'non-duplicates'}; thresholds and the reranker need both labels "
            f"(raise split.calibration_fraction or n_train)"
        )
    before = dup[dup < cal_start]
    cut = int(len(before) * (1 - cfg.val_fraction))
    cut = min(max(cut, 1), len(before) - 1)
    val_start, val_ok = _snap(int(before[cut]), boundaries, int(before[0]) + 1, int(before[-1]))
    (sel_start, sel_ok), (gate_start, gate_ok) = tail["selection"], tail["gate"]
    return _Regions(val_start, cal_start, sel_start, gate_start, val_ok, cal_ok, sel_ok, gate_ok)


def _disjoint_order(df: pd.DataFrame, n_train: int, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Question-disjoint mode: whole question-graph components, in a seeded order, filled into test, then training.

    A component goes to test while it fits in the `n_test` rows still open there, else to the
    training range while it fits there, else nowhere. Returns the training range's row positions
    (component by component, file order inside one), the allowed cut positions in that order,
    test's row positions (file order) and facts.
    """
    comp = question_components(df["qid1"].to_numpy(), df["qid2"].to_numpy())
    sizes = np.bincount(comp)
    order = np.random.default_rng(seed).permutation(len(sizes))
    place = np.full(len(sizes), -1, dtype=np.int8)  # 0 training range, 1 test, -1 unused
    open_test, open_train = n_test, n_train
    for c in order:
        size = int(sizes[c])
        if size <= open_test:
            place[c], open_test = 1, open_test - size
        elif size <= open_train:
            place[c], open_train = 0, open_train - size
        if open_test == 0 and open_train == 0:
            break
    rank = np.empty(len(sizes), dtype=np.int64)
    rank[order] = np.arange(len(sizes))
    positions = np.arange(len(df))
    in_train = place[comp] == 0
    train_rows = positions[in_train][np.lexsort((positions[in_train], rank[comp[in_train]]))]
    train_comp = comp[train_rows]
    boundaries = np.flatnonzero(np.r_[True, train_comp[1:] != train_comp[:-1], True])
    test_rows = positions[place[comp] == 1]
    facts = {
        "components": int(len(sizes)),
        "largest_component_rows": int(sizes.max()),
        "unused_rows": int((place[comp] == -1).sum()),
    }
    return train_rows, boundaries, test_rows, facts


def _unseen_by(region: pd.DataFrame, earlier: dict[str, pd.DataFrame], name: str) -> tuple[pd.DataFrame, int]:
    """The region's pairs that share no question (by id) with the training-range splits in `earlier` (test excluded:
    it is reported only), and how many were left out; ConfigError when one label is gone."""
    seen: set[int] = set()
    for split, part in earlier.items():
        if split != "test":
            seen |= set(part["qid1"].tolist()) | set(part["qid2"].tolist())
    keep = ~(region["qid1"].isin(seen) | region["qid2"].isin(seen))
    kept = region[keep]
    if kept["is_duplicate"].nunique() < 2:
        raise ConfigError(f"the {name} region keeps {len(kept):,} of its {len(region):,} pairs once pairs with a question of "
                          f"an earlier region are left out, of one label only; raise split.{name}_fraction or n_train")
    return kept, int((~keep).sum())


def _shared_questions(parts: dict[str, pd.DataFrame]) -> tuple[dict[str, int], int]:
    """Distinct questions each two splits have in common, and test questions found in any other split."""
    qids = {name: set(part["qid1"]) | set(part["qid2"]) for name, part in parts.items()}
    names = list(parts)
    pairs = {f"{a}&{b}": len(qids[a] & qids[b]) for i, a in enumerate(names) for b in names[i + 1 :]}
    others = set().union(*(q for name, q in qids.items() if name != "test"))
    return pairs, len(qids["test"] & others)


def make_splits(
    df: pd.DataFrame, cfg: SplitConfig, *, seed: int | None = None
) -> tuple[dict[str, pd.DataFrame], dict[str, object]]:
    """Split into train/negatives/val/test/calibration; return the splits and facts for the manifest.

    Positional mode (the reference course's): rows [0, n_train) are the training range, rows
    [n_train, n_train + n_test) are `test`. Question-disjoint mode: whole connected components of
    the question graph (any label) fill test and then the training range in an order drawn with
    `seed`, so test shares no question with the other splits. Either way the training range (in
    file order, or component by component) is cut into three contiguous regions:
    - train region: its duplicates are `train`, its non-duplicates `negatives`;
    - val region: its duplicates are `val` (its non-duplicates are not used);
    - calibration region, the last `calibration_fraction` of the rows: every pair is `calibration`,
      so nothing early stopping or the learning-rate schedule saw is used to choose thresholds or gate.
    Rows with a missing question are dropped from each split afterwards (and counted), so that the
    positions stay those of the original file.
    """
    n_train, n_test = plan_splits(len(df), cfg)
    extra: dict[str, object] = {}
    if cfg.mode == "question_disjoint":
        if seed is None:
            raise ConfigError("split.mode='question_disjoint' needs the configuration's seed")
        train_rows, boundaries, test_rows, extra = _disjoint_order(df, n_train, n_test, seed)
        train_range, test = df.iloc[train_rows], df.iloc[test_rows]
    else:
        train_range, test = df.iloc[:n_train], df.iloc[n_train : n_train + n_test]
        boundaries = np.arange(n_train + 1)
    labels = train_range["is_duplicate"].to_numpy()
    r = _cut_regions(labels, boundaries, cfg)
    dup = labels == 1
    regions = {
        "train": (0, r.val_start),
        "val": (r.val_start, r.cal_start),
        "calibration": (r.cal_start, r.sel_start),
        "selection": (r.sel_start, r.gate_start),
        "gate": (r.gate_start, len(train_range)),
    }
    chosen = {
        "train": train_range.iloc[: r.val_start][dup[: r.val_start]],
        "negatives": train_range.iloc[: r.val_start][~dup[: r.val_start]],
        "val": train_range.iloc[r.val_start : r.cal_start][dup[r.val_start : r.cal_start]],
        "test": test,
        "calibration": train_range.iloc[r.cal_start : r.sel_start],
    }
    chosen["selection"], unseen_dropped = _unseen_by(train_range.iloc[r.sel_start : r.gate_start], chosen, "selection")
    chosen["gate"], gate_dropped = _unseen_by(train_range.iloc[r.gate_start :], chosen, "gate")
    out: dict[str, pd.DataFrame] = {}
    dropped: dict[str, int] = {}
    for name in SPLITS:
        part = chosen[name]
        keep = part["question1"].notna() & part["question2"].notna()
        dropped[name] = int((~keep).sum())
        out[name] = part[keep].reset_index(drop=True)
    shared, test_seen = _shared_questions(out)
    facts = {
        "mode": cfg.mode,
        "n_rows": len(df),
        "n_train": len(train_range),
        "n_test": len(test),
        "val_fraction": cfg.val_fraction,
        "calibration_fraction": cfg.calibration_fraction,
        # Positions in the training range (file rows in positional mode): [start, end).
        "val_start_row": r.val_start,
        "calibration_start_row": r.cal_start,
        "regions": {
            name: {
                "start": start,
                "end": end,
                "duplicates": int(dup[start:end].sum()),
                "non_duplicates": int((~dup[start:end]).sum()),
            }
            for name, (start, end) in regions.items()
        },
        "cuts_on_component_boundaries": {"val": r.val_cut_on_boundary, "calibration": r.cal_cut_on_boundary,
                                         "selection": r.sel_cut_on_boundary, "gate": r.gate_cut_on_boundary},
        "shared_questions": shared,
        "test_questions_seen": test_seen,
        # Pairs of the selection and gate regions left out for holding a question of an earlier region.
        "dropped_seen_question": {"selection": unseen_dropped, "gate": gate_dropped},
        "dropped_missing_question": dropped,
        **extra,
    }
    if cfg.mode == "positional":
        del facts["cuts_on_component_boundaries"]
    return out, facts


def content_sha256(df: pd.DataFrame) -> str:
    """Hash of a split's values and schema, independent of Parquet encoder versions."""
    h = hashlib.sha256(str([(c, str(t)) for c, t in df.dtypes.items()]).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()


def write_split(df: pd.DataFrame, path: Path) -> dict[str, object]:
    """Write one split as Parquet with the explicit schema; return its manifest entry."""
    table = pa.Table.from_pandas(df[SCHEMA.names], schema=SCHEMA, preserve_index=False)
    pq.write_table(table, path, compression=COMPRESSION)
    return {
        "file": path.name,
        "rows": len(df),
        "duplicates": int((df["is_duplicate"] == 1).sum()),
        "content_sha256": content_sha256(df[SCHEMA.names]),
        "file_sha256": sha256_file(path),
        "id_min": int(df["id"].min()) if len(df) else None,
        "id_max": int(df["id"].max()) if len(df) else None,
    }


def read_split(path: Path) -> pd.DataFrame:
    """Read a split back with the schema's types (strings as Python str)."""
    return pq.read_table(path, schema=SCHEMA).to_pandas()
