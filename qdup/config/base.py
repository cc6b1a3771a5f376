"""What every configuration section is: a frozen pydantic model that refuses unknown fields; and the label convention."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

# Everywhere in qdup: labels, similarities and decisions mean this.
LABEL_CONVENTION = (
    "is_duplicate 1 = same intent; similarity = cosine of the L2-normalised encodings in [-1, 1]; "
    "predicted duplicate iff similarity >= threshold"
)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _ngram_range(v: tuple[int, int]) -> tuple[int, int]:
    if not 1 <= v[0] <= v[1] <= 10:
        raise ValueError("must be (low, high) with 1 <= low <= high <= 10")
    return v


# Character n-gram sizes (low, high), 1 <= low <= high <= 10: the lexical baseline's and the encoder's sub-words.
NgramRange = Annotated[tuple[int, int], AfterValidator(_ngram_range)]
