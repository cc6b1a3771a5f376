"""What every configuration section is: a frozen pydantic model that refuses unknown fields; and the label convention."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

# Everywhere in qdup: labels, similarities and decisions mean this.
LABEL_CONVENTION = (
    "is_duplicate 1 = same intent; similarity = cosine of the L2-normalised encodings in [-1, 1]; "
    "predicted duplicate iff similarity >= threshold"
)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
