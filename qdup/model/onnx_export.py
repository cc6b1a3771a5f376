"""The derived fast-inference form of an encoder: the same network as an ONNX graph with ONNX's native LSTM op.

Hand-built from the Keras weights with onnx.helper rather than converted by tf2onnx: tf2onnx does
not recognise Keras 3's LSTM loop and emits a generic `Loop` that ONNX Runtime runs slower than
TensorFlow, while ONNX's native `LSTM` op is the fast form (figures: bench/results/inference, from
`python -m bench.inference`). The graph is exactly the encoder at inference (dropouts are
identities): embedding [+ mean of the word's n-gram embeddings] -> (Bi)LSTM -> mean over the text's
steps -> unit length. `check_fast_encoder` (export) and tests/model/test_fast_inference.py hold it to the
Keras model within 1e-5.
"""

from __future__ import annotations

import keras
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qdup.errors import QdupError
from qdup.model.fast import FastEncoder
from qdup.model.features import QuestionFeaturizer, SubwordSpec
from qdup.model.network import encoder_masks_padding, subword_layer

OPSET = 17
INPUT_TOKENS = "tokens"
INPUT_SUBWORDS = "subwords"
INPUT_LENGTHS = "lengths"
OUTPUT = "encoding"


def subword_spec(encoder: keras.Model) -> SubwordSpec | None:
    """The n-gram hashing settings of an encoder with sub-word features, else None."""
    layer = subword_layer(encoder)
    if layer is None:
        return None
    return SubwordSpec(layer.buckets, layer.ngram_min, layer.ngram_max, layer.max_per_word)


def _gates(matrix: np.ndarray) -> np.ndarray:
    """Keras's (in, 4H) kernel, gates ordered i, f, c, o -> ONNX's (4H, in), gates ordered i, o, f, c."""
    i, f, c, o = np.split(matrix, 4, axis=-1)
    return np.concatenate([i, o, f, c], axis=-1).T


def _lstm_cells(encoder: keras.Model) -> tuple[list[keras.layers.Layer], str]:
    try:
        layer = encoder.get_layer("bilstm")
        return [layer.forward_layer, layer.backward_layer], "bidirectional"
    except ValueError:
        return [encoder.get_layer("lstm")], "forward"


def _check_lstm(lstm: keras.layers.Layer) -> None:
    cfg = lstm.get_config()
    expected = {"activation": "tanh", "recurrent_activation": "sigmoid", "use_bias": True, "unroll": False}
    for key, want in expected.items():
        if cfg.get(key) != want:
            raise QdupError(f"encoder LSTM {lstm.name}: {key}={cfg.get(key)!r}, the fast form supports {want!r} only")


def encoder_to_onnx(encoder: keras.Model) -> bytes:
    """The ONNX graph (serialised) of `encoder`: inputs tokens (n, t) int32 [, subwords (n, t, per_word) int32],
    lengths (n,) int32 (tokens read per text; the padded width for an encoder that does not mask padding);
    output encoding (n, d) float32 unit rows."""
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op: str, inputs: list[str], output: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    inputs = [helper.make_tensor_value_info(INPUT_TOKENS, TensorProto.INT32, ["n", "t"])]
    words = node("Gather", [const("word_embedding", encoder.get_layer("embedding").embeddings.numpy()), INPUT_TOKENS], "words")
    layer = subword_layer(encoder)
    x = words
    if layer is not None:
        inputs.append(helper.make_tensor_value_info(INPUT_SUBWORDS, TensorProto.INT32, ["n", "t", layer.max_per_word]))
        table = layer.embedding.embeddings.numpy().copy()
        # Id 0 is padding, left out of the mean: a zero row adds nothing to the sum.
        table[0] = 0.0
        grams = node("Gather", [const("ngram_embedding", table), INPUT_SUBWORDS], "grams")
        total = node("ReduceSum", [grams, const("axis2", np.array([2], np.int64))], "gram_sum", keepdims=0)
        present = node("Cast", [node("Greater", [INPUT_SUBWORDS, const("zero_i", np.array(0, np.int32))], "gram_present")],
                       "gram_present_f", to=TensorProto.FLOAT)
        count = node("Max", [node("ReduceSum", [present, const("axis2b", np.array([2], np.int64))], "gram_count", keepdims=1),
                             const("one_f", np.array(1.0, np.float32))], "gram_count1")
        x = node("Add", [words, node("Div", [total, count], "gram_mean")], "word_vectors")
    inputs.append(helper.make_tensor_value_info(INPUT_LENGTHS, TensorProto.INT32, ["n"]))

    cells, direction = _lstm_cells(encoder)
    for cell in cells:
        _check_lstm(cell)
    units = cells[0].units
    w = np.stack([_gates(c.cell.kernel.numpy()) for c in cells]).astype(np.float32)
    r = np.stack([_gates(c.cell.recurrent_kernel.numpy()) for c in cells]).astype(np.float32)
    # Keras has one bias per gate; ONNX adds an input and a recurrent bias: the second is zero.
    b = np.stack([np.concatenate([_gates(c.cell.bias.numpy()[None, :])[:, 0], np.zeros(4 * units, np.float32)]) for c in cells])
    time_major = node("Transpose", [x], "time_major", perm=[1, 0, 2])
    y = node("LSTM", [time_major, const("lstm_w", w), const("lstm_r", r), const("lstm_b", b.astype(np.float32)), INPUT_LENGTHS],
             "lstm_y", hidden_size=units, direction=direction)
    # (t, directions, n, h) -> (n, t, directions * h): forward then backward, as Bidirectional's concat.
    steps = node("Reshape", [node("Transpose", [y], "lstm_nt", perm=[2, 0, 1, 3]), const("shape_nt", np.array([0, 0, -1], np.int64))],
                 "steps")
    # Mean over the text's own steps (what MaskedMeanPooling does with the padding mask).
    width = node("Gather", [node("Shape", [INPUT_TOKENS], "tokens_shape"), const("one_i", np.array(1, np.int64))], "width")
    positions = node("Range", [const("zero_l", np.array(0, np.int64)), width, const("step_l", np.array(1, np.int64))], "positions")
    lengths = node("Cast", [INPUT_LENGTHS], "lengths_l", to=TensorProto.INT64)
    valid = node("Less", [node("Unsqueeze", [positions, const("axis0", np.array([0], np.int64))], "positions_row"),
                          node("Unsqueeze", [lengths, const("axis1", np.array([1], np.int64))], "lengths_col")], "valid")
    weights = node("Unsqueeze", [node("Cast", [valid], "valid_f", to=TensorProto.FLOAT), const("axis_last", np.array([2], np.int64))],
                   "step_weights")
    summed = node("ReduceSum", [node("Mul", [steps, weights], "kept"), const("axis1b", np.array([1], np.int64))], "step_sum", keepdims=0)
    counted = node("Max", [node("ReduceSum", [weights, const("axis1c", np.array([1], np.int64))], "step_count", keepdims=0),
                           const("one_f2", np.array(1.0, np.float32))], "step_count1")
    pooled = node("Div", [summed, counted], "mean_pooled")
    if any(layer.name == "max_pool" for layer in encoder.layers):
        # The maximum over the text's own steps beside the mean (MaskedMaxPooling; zeros for an empty text).
        keep = node("Unsqueeze", [valid, const("axis_last2", np.array([2], np.int64))], "keep_steps")
        best = node("ReduceMax", [node("Where", [keep, steps, const("low", np.array(-1e9, np.float32))], "masked_steps")],
                    "step_max", axes=[1], keepdims=0)
        has = node("Unsqueeze", [node("Greater", [lengths, const("zero_l2", np.array(0, np.int64))], "has_steps"),
                                 const("axis1e", np.array([1], np.int64))], "has_steps_col")
        maxed = node("Where", [has, best, const("zero_f", np.array(0.0, np.float32))], "max_pooled")
        pooled = node("Concat", [pooled, maxed], "pooled", axis=1)
    norm = node("Sqrt", [node("Max", [node("ReduceSum", [node("Mul", [pooled, pooled], "squares"),
                                                         const("axis1d", np.array([1], np.int64))], "square_sum", keepdims=1),
                                      const("eps", np.array(1e-12, np.float32))], "square_sum_eps")], "norm")
    node("Div", [pooled, norm], OUTPUT)

    dims = int(encoder.output_shape[-1])
    graph = helper.make_graph(nodes, "qdup_encoder", inputs, [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["n", dims])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="qdup")
    model.ir_version = 8
    helper.set_model_props(model, {"masks_padding": str(encoder_masks_padding(encoder)).lower(), "dims": str(dims)})
    onnx.checker.check_model(model)
    return model.SerializeToString()


# Fast forms built in this process, by (encoder, vectorizer, max_length): a stage encodes several lists with one encoder.
# The objects themselves are kept in the entry, so an id is never reused while its entry lives.
_BUILT: dict[tuple[int, int, int], tuple[keras.Model, object, FastEncoder]] = {}
_BUILT_MAX = 4


def fast_encoder_from_keras(encoder: keras.Model, vectorizer, max_length: int) -> FastEncoder:
    """The fast form of an in-memory Keras encoder with its vectorizer (what an export's encoder.onnx holds)."""
    key = (id(encoder), id(vectorizer), int(max_length))
    hit = _BUILT.get(key)
    if hit is not None and hit[0] is encoder and hit[1] is vectorizer:
        return hit[2]
    vocabulary = vectorizer.get_vocabulary(include_special_tokens=True)
    fast = FastEncoder(encoder_to_onnx(encoder), QuestionFeaturizer(vocabulary, max_length, subword_spec(encoder)),
                       encoder_masks_padding(encoder))
    while len(_BUILT) >= _BUILT_MAX:
        _BUILT.pop(next(iter(_BUILT)))
    _BUILT[key] = (encoder, vectorizer, fast)
    return fast
