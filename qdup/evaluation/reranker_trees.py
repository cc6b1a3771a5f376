"""The reranker's fitted trees as one ONNX TreeEnsemble, scored by ONNX Runtime (as the encoder is served).

Built through public APIs only: treelite's scikit-learn importer (`treelite.sklearn.import_model`) reads the fitted
HistGradientBoostingClassifier, and its documented tree fields (treelite's model spec: `cleft`, `cright`,
`split_index`, `default_left`, `threshold`, `leaf_value`, `node_type`, `cmp`) become the nodes of one
`ai.onnx.ml` TreeEnsemble (opset 5: float64 thresholds and leaf values, so every split compares the same doubles
scikit-learn compares). The graph adds the model's baseline to the trees' sum; `predict_proba` applies the same
`expit` scikit-learn applies. Only the order of the float additions differs from scikit-learn's, so probabilities
agree to a few ulps (tests/evaluation/test_reranker.py checks 1e-12 on rows at, above and missing the thresholds).

skl2onnx is not used: its converter writes TreeEnsembleClassifier with float32 thresholds, which would send a feature
equal to a threshold to the wrong side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from scipy.special import expit

from qdup.errors import QdupError
from qdup.model.fast import session_options

INPUT = "features"
OUTPUT = "margin"
# treelite's node encoding (model spec v4): node_type 1 is a numerical test, cmp 3 is "<=" (scikit-learn's
# "left iff value <= threshold").
_NUMERICAL_TEST = 1
_LESS_EQUAL = 3
# ai.onnx.ml TreeEnsemble enums: nodes_modes BRANCH_LEQ, aggregate_function SUM, post_transform NONE.
_BRANCH_LEQ = 0
_SUM = 1
_NONE = 0
_OPSETS = (helper.make_opsetid("", 21), helper.make_opsetid("ai.onnx.ml", 5))
_TREE_FIELDS = ("cleft", "cright", "split_index", "default_left", "node_type", "cmp", "threshold", "leaf_value")


def trees_to_onnx(model: Any, n_features: int) -> bytes:
    """The ONNX model (serialised) of a fitted binary HistGradientBoostingClassifier: input `features` (n, n_features)
    float64, output `margin` (n, 1) float64, the decision function."""
    import treelite  # only fitting needs it; scoring a saved reranker needs ONNX Runtime alone

    if getattr(model, "n_trees_per_iteration_", None) != 1:
        raise QdupError("reranker trees: a binary HistGradientBoostingClassifier (one tree per iteration) is expected")
    tl = treelite.sklearn.import_model(model)
    base = tl.get_header_accessor().get_field("base_scores")
    if tl.num_feature != n_features or base.size != 1:
        raise QdupError(f"reranker trees: {tl.num_feature} features and {base.size} base scores; expected {n_features} and 1")
    feat: list[int] = []
    split: list[float] = []
    missing_true: list[int] = []
    true_id: list[int] = []
    true_leaf: list[int] = []
    false_id: list[int] = []
    false_leaf: list[int] = []
    roots: list[int] = []
    leaf_values: list[float] = []
    for t in range(tl.num_tree):
        acc = tl.get_tree_accessor(t)
        f = {name: acc.get_field(name) for name in _TREE_FIELDS}
        is_leaf = f["cleft"] < 0
        inner, leaves = np.flatnonzero(~is_leaf), np.flatnonzero(is_leaf)
        if ((f["node_type"][inner] != _NUMERICAL_TEST) | (f["cmp"][inner] != _LESS_EQUAL)).any():
            raise QdupError("reranker trees: only numerical '<=' splits are expected (the features are never categorical)")
        node_at = {int(k): len(feat) + i for i, k in enumerate(inner)}
        leaf_at = {int(k): len(leaf_values) + i for i, k in enumerate(leaves)}
        leaf_values.extend(f["leaf_value"][leaves].tolist())
        if not len(inner):
            # A tree of one leaf: TreeEnsemble's roots are nodes, so one split whose two sides are that leaf.
            roots.append(len(feat))
            feat.append(0)
            split.append(0.0)
            missing_true.append(0)
            true_id.append(leaf_at[0])
            true_leaf.append(1)
            false_id.append(leaf_at[0])
            false_leaf.append(1)
            continue
        roots.append(node_at[0])
        for k in inner:
            feat.append(int(f["split_index"][k]))
            split.append(float(f["threshold"][k]))
            # The true branch is "value <= threshold", scikit-learn's left: a missing value goes left iff default_left.
            missing_true.append(int(f["default_left"][k]))
            for child, ids, leaf_flags in ((int(f["cleft"][k]), true_id, true_leaf), (int(f["cright"][k]), false_id, false_leaf)):
                ids.append(leaf_at[child] if is_leaf[child] else node_at[child])
                leaf_flags.append(int(is_leaf[child]))
    ensemble = helper.make_node(
        "TreeEnsemble", [INPUT], ["trees"], domain="ai.onnx.ml", aggregate_function=_SUM, post_transform=_NONE,
        n_targets=1, tree_roots=roots, nodes_featureids=feat,
        nodes_splits=numpy_helper.from_array(np.asarray(split, dtype=np.float64)),
        nodes_modes=numpy_helper.from_array(np.full(len(feat), _BRANCH_LEQ, dtype=np.uint8)),
        nodes_missing_value_tracks_true=missing_true, nodes_truenodeids=true_id, nodes_trueleafs=true_leaf,
        nodes_falsenodeids=false_id, nodes_falseleafs=false_leaf, leaf_targetids=[0] * len(leaf_values),
        leaf_weights=numpy_helper.from_array(np.asarray(leaf_values, dtype=np.float64)),
    )
    baseline = numpy_helper.from_array(np.asarray(base, dtype=np.float64).reshape(1, 1), name="baseline")
    graph = helper.make_graph(
        [ensemble, helper.make_node("Add", ["trees", "baseline"], [OUTPUT])], "qdup_reranker_trees",
        [helper.make_tensor_value_info(INPUT, TensorProto.DOUBLE, [None, n_features])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.DOUBLE, [None, 1])], initializer=[baseline],
    )
    proto = helper.make_model(graph, opset_imports=list(_OPSETS), producer_name="qdup")
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString()


class TreeScorer:
    """Duplicate probabilities from the trees' ONNX model (`trees_to_onnx`), on one ONNX Runtime thread: the reranker
    scores a few hundred pairs per query, where more threads cost more than they save."""

    def __init__(self, data: bytes, n_features: int, where: Path | str = "the reranker's trees"):
        try:
            self.session = ort.InferenceSession(data, session_options(1), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable or invalid models
            raise QdupError(f"{where}: ONNX Runtime refused the trees: {str(exc).splitlines()[0]}") from exc
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if ([(i.name, i.type, i.shape[1:]) for i in inputs] != [(INPUT, "tensor(double)", [n_features])]
                or [o.name for o in outputs] != [OUTPUT]):
            raise QdupError(f"{where}: not the reranker's trees (expected input {INPUT} of {n_features} float64 features, "
                            f"output {OUTPUT})")
        self.data = data

    @classmethod
    def from_model(cls, model: Any, n_features: int) -> TreeScorer:
        return cls(trees_to_onnx(model, n_features), n_features)

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """The model's raw score (scikit-learn's decision_function) of each row of x."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        return self.session.run([OUTPUT], {INPUT: x})[0][:, 0]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Duplicate probability (scikit-learn's predict_proba(x)[:, 1]) of each row of x."""
        return expit(self.decision_function(x))
