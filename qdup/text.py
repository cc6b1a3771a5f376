"""The one text standardisation: Keras TextVectorization's "lower_and_strip_punctuation" + "whitespace" split, in plain Python.

The vocabulary layer is built with STANDARDIZE and SPLIT; every place that needs a text's tokens
without TensorFlow (the drift profile, the single-query search path) calls `standardize`, which
gives what the layer gives. Hand-written because Keras offers it only as TensorFlow ops, which cost
milliseconds per call and a TensorFlow runtime; tests/data/test_drift.py and
tests/search/test_encoder.py check it against the layer itself.
"""

from __future__ import annotations

import re
import string

STANDARDIZE = "lower_and_strip_punctuation"
SPLIT = "whitespace"

# tf.strings.lower lowers ASCII letters only (its encoding is empty); Keras removes this regex.
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_PUNCTUATION = re.compile(r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']')
_WHITESPACE = re.compile(r"[ \t\n\r\f\v]+")


def standardize(text: str) -> list[str]:
    """The tokens of `text` as the vocabulary layer sees them (before the OOV mapping)."""
    return [t for t in _WHITESPACE.split(_PUNCTUATION.sub("", text.translate(_ASCII_LOWER))) if t]
