"""Settings of the HTTP model server (`qdup serve-model`): one frozen, validated object."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class ServeConfig(BaseModel):
    """What the server serves, where it listens, and the limits every request is held to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(default="production", min_length=1, description="an alias (followed) or a version id (pinned)")
    store: str | None = Field(default=None, description="store URL (default $QDUP_HOME/store)")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    max_batch_pairs: int = Field(default=1000, ge=1, description="pairs in one /v1/similarity request")
    max_search_queries: int = Field(default=100, ge=1, description="questions in one /v1/search request")
    max_k: int = Field(default=100, ge=1, description="largest k a /v1/search request may ask for")
    max_question_chars: int = Field(default=2000, ge=1, description="characters in one question")
    max_body_bytes: int = Field(default=2_000_000, ge=1024, description="bytes in one request body")
    batch_wait_ms: float = Field(
        default=0.0, ge=0, le=1000,
        description="how long a request waits for others to share its model call (0: none; the requests that queue while a "
                    "model call runs still share the next one, so a lone request is not kept waiting for company)",
    )
    max_microbatch_pairs: int = Field(default=1024, ge=1, description="pairs the micro-batcher puts into one model call")
    poll_s: float = Field(default=5.0, gt=0, description="how often the alias is checked for a move")
    probe_attempts: int = Field(
        default=3, ge=1,
        description="loads of a version whose probe pairs fail before it is refused for good (tried again after a backoff "
                    "that doubles from poll_s); a version whose files fail their hashes or a safe_mode load is refused at once",
    )
    probe_timeout_s: float = Field(default=10.0, gt=0, description="/readyz's limit for its probe pair")
    encoding_cache_mb: float = Field(
        default=64.0, ge=0, description="memory for question encodings kept across requests (per version, LRU); 0 disables"
    )
    # Serving's thread pools, not training's (qdup.runtime): one model thread, one search thread and the
    # event loop share the machine, so each library gets a small pool rather than one per core each.
    inference_threads: int = Field(
        default=2, ge=1, description="ONNX Runtime threads of the encoder's fast form (the model thread's calls)"
    )
    tf_intra_op_threads: int = Field(default=2, ge=1, description="threads one TensorFlow op may use (a large batch's matrix products)")
    tf_inter_op_threads: int = Field(
        default=1, ge=1, description="TensorFlow ops run at once: one model call at a time is all the model thread asks for"
    )
    faiss_threads: int = Field(default=1, ge=1, description="OpenMP threads of a faiss search (one query set at a time on the search thread)")
    blas_threads: int = Field(default=1, ge=1, description="BLAS threads (NumPy, SciPy: the reranker's and the lexical side's small products)")
    # Feedback (POST /v1/feedback): people's judgements of pairs, kept in the store's registry database.
    feedback_token: SecretStr | None = Field(
        default=None, description="when set, every feedback write needs `Authorization: Bearer <token>` (and reads too, unless "
                                  "feedback_public_reads)")
    feedback_public_reads: bool = Field(default=False, description="feedback reads (GET /v1/feedback/stats) need no token")
    feedback_rate_per_s: float = Field(default=5.0, ge=0, description="feedback writes per second one client address may make "
                                                                     "on average (token bucket); 0: no limit")
    feedback_burst: int = Field(default=20, ge=1, description="feedback writes one client address may make at once (bucket size)")
    max_note_chars: int = Field(default=1000, ge=1, description="characters in a feedback note")
