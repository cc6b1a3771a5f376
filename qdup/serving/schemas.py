"""The HTTP API's request and response models: what /docs and the OpenAPI schema show, with the configured limits."""

# No `from __future__ import annotations`: the request models are local to request_models, and
# FastAPI must see them as objects, not as names it would look up in this module.
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, StringConstraints, Tag

from qdup.serving.settings import ServeConfig

# Tags of the request forms (one pair or a batch; one question or several); not field names, so
# they are left out of the field path that errors name.
FORM_TAGS = {"one_pair_form", "pairs_form", "one_question_form", "questions_form"}


def _whole_number(value: Any) -> Any:
    """A JSON number with no fraction (5.0) is an integer to JSON Schema: take it as one; 5.5, true and "5" stay refused."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# The characters str.isspace() calls whitespace (those _not_blank strips), as a class that Python's, ECMAScript's
# and Rust's regular expressions read alike (their \s differ on a few control characters).
SPACE_CLASS = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NOT_BLANK_PATTERN = f"[^{SPACE_CLASS}]"


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty or whitespace-only")
    return value


def _form(many_key: str) -> Discriminator:
    """Choose the request form by the key present: a body is validated against one form only, and
    its errors name that form's fields (not every branch of a union)."""

    def tag(value: Any) -> str | None:
        if not isinstance(value, dict):
            return None
        return f"{many_key}_form" if many_key in value else f"one_{many_key.removesuffix('s')}_form"

    return Discriminator(tag)


def request_models(cfg: ServeConfig) -> dict[str, Any]:
    """The request and response models, with this configuration's limits in them (and in /docs)."""
    Question = Annotated[
        str,
        StringConstraints(strict=True, min_length=1, max_length=cfg.max_question_chars),
        AfterValidator(_not_blank),
        # The pattern tells the schema's readers (and fuzzers) what _not_blank checks: some character that is not whitespace.
        Field(description=f"a question: a non-blank string of at most {cfg.max_question_chars:,} characters",
              json_schema_extra={"pattern": NOT_BLANK_PATTERN}),
    ]
    strict = ConfigDict(extra="forbid")

    class PairRequest(BaseModel):
        model_config = strict
        question1: Question
        question2: Question

    class Pair(BaseModel):
        model_config = strict
        question1: Question
        question2: Question

    class PairsRequest(BaseModel):
        model_config = strict
        pairs: list[Pair] = Field(min_length=1, max_length=cfg.max_batch_pairs)

    K = Annotated[int, Field(ge=1, le=cfg.max_k, strict=True), BeforeValidator(_whole_number)]
    default_k = min(10, cfg.max_k)  # a default the schema's own bounds allow

    class QuestionRequest(BaseModel):
        model_config = strict
        question: Question
        k: K = default_k

    class QuestionsRequest(BaseModel):
        model_config = strict
        questions: list[Question] = Field(min_length=1, max_length=cfg.max_search_queries)
        k: K = default_k

    SimilarityBody = Annotated[
        Annotated[PairRequest, Tag("one_pair_form")] | Annotated[PairsRequest, Tag("pairs_form")], _form("pairs")
    ]
    SearchBody = Annotated[
        Annotated[QuestionRequest, Tag("one_question_form")] | Annotated[QuestionsRequest, Tag("questions_form")],
        _form("questions"),
    ]
    return {
        "SimilarityBody": SimilarityBody,
        "SearchBody": SearchBody,
        "PairsRequest": PairsRequest,
        "QuestionsRequest": QuestionsRequest,
        "Question": Question,
    }


class Score(BaseModel):
    similarity: float = Field(description="cosine of the two questions' encodings, in [-1, 1]")
    reranker_score: float | None = Field(default=None, description="the pair reranker's duplicate probability (versions with one)")
    duplicate: bool = Field(description="reranker_score >= reranker_threshold where the reranker decides (decided_by), else "
                            "similarity >= threshold")


class Decision(BaseModel):
    """Which version decided, and by which score and threshold: the head of every similarity answer."""

    version: str
    threshold: float
    reranker_threshold: float | None = None
    decided_by: str = Field(default="encoder", description="which score made `duplicate`: reranker or encoder")


# Pydantic puts the fields of the last base first: the pair's scores, then the decision's head.
class SimilarityAnswer(Decision, Score):
    """One pair's scores and duplicate decision."""


class PairsAnswer(Decision):
    results: list[Score]


SCORE_KIND_HELP = ("what `score` is: cosine (dense ranking), bm25 (lexical), rrf or weighted (hybrid fusion of the two), "
                   "reranker (the pair reranker's probability), search_reranker (the search reranker's probability: it orders "
                   "the hybrid's first 20; hits after them keep the hybrid's order)")


class HitOut(BaseModel):
    id: str | int
    question: str
    score: float = Field(description="the score that ranked the hits: results are in descending order of it")
    score_kind: str = Field(description=SCORE_KIND_HELP)
    similarity: float = Field(description="the encoder cosine of the query and this question, in [-1, 1] (not the ranking score "
                                          "unless score_kind is cosine)")
    reranker_score: float | None = Field(default=None, description="the pair reranker's duplicate probability (versions with one)")
    duplicate: bool = Field(description="reranker_score >= the reranker's threshold with a reranker, else similarity >= the "
                                        "version's threshold (duplicate_by, duplicate_threshold)")


class Ranking(BaseModel):
    """How the hits were ranked and marked: the head of every search answer (`VersionSearcher.describe`)."""

    version: str
    method: str = Field(description="the ranking: dense, lexical, hybrid or reranked (the version's choice)")
    score_kind: str = Field(description=SCORE_KIND_HELP)
    duplicate_by: str = Field(description="the field a hit's duplicate mark compares: reranker_score or similarity")
    duplicate_threshold: float


class SearchAnswer(Ranking):
    results: list[HitOut]


class SearchManyAnswer(Ranking):
    results: list[list[HitOut]]


class Problem(BaseModel):
    error: str
    version: str | None = None
