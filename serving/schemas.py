"""The HTTP contract: request and response bodies, shared by the service and the Python client.

Request bodies are checked here and only here: their shape by pydantic (types, unknown fields), and the
limits the settings set (``GROUNDWORK_SERVE_MAX_K``, ``GROUNDWORK_SERVE_MAX_QUERY_CHARS``) by ``checked``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

Mode = Literal["vector", "fulltext", "hybrid"]
FILTERS_DOC = (
    "Metadata filters, ANDed: path_prefix (string), media_type, title, document_id (string or list), "
    "page (integer or list), groups (list: narrows the search to some of the caller's access groups; "
    "naming a group the caller does not hold is refused with 403). Any other field is refused with 400."
)


@dataclass(frozen=True)
class Limits:
    """What the settings allow in one request (the defaults are the settings' defaults)."""

    max_k: int = 100
    max_query_chars: int = 2_000


class InvalidRequest(ValueError):
    """A request body outside the limits: answered 400 with this message, which never echoes the input."""


class QueryRequest(BaseModel):
    """What /search and /answer share: a query, how many results, how to search, and filters."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(..., description="The question.")
    k: int = Field(5, description="How many chunks to return (1 to GROUNDWORK_SERVE_MAX_K, default 100).")
    mode: Mode = "hybrid"
    filters: dict[str, Any] = Field(default_factory=dict, description=FILTERS_DOC)

    @property
    def needs_text(self) -> bool:
        return True

    def checked(self, limits: Limits) -> Self:
        """This request with its query stripped, or InvalidRequest naming the limit it breaks."""
        query = self.query.strip()
        if self.needs_text and not query:
            raise InvalidRequest("empty query")
        if self.needs_text and len(query) > limits.max_query_chars:
            raise InvalidRequest(f"query longer than {limits.max_query_chars} characters")
        if not 1 <= self.k <= limits.max_k:
            raise InvalidRequest(f"k must be between 1 and {limits.max_k}")
        return self.model_copy(update={"query": query})


class SearchRequest(QueryRequest):
    query: str = Field("", description="The question or keywords (required unless `vector` is given).")
    vector: list[float] | None = Field(
        None,
        max_length=4096,
        description="A query vector from the model in /health's model_id, instead of text (mode vector).",
    )

    @property
    def needs_text(self) -> bool:
        return self.vector is None

    def checked(self, limits: Limits) -> Self:
        if self.vector is not None and self.mode != "vector":
            raise InvalidRequest("a query vector needs mode 'vector'")
        return super().checked(limits)


class AnswerRequest(QueryRequest):
    k: int = Field(5, description="How many passages to retrieve as sources.")
    stream: bool = Field(
        False,
        description="Stream the answer as server-sent events: `token` events ({text}), `restart` when a "
        "backend failed mid-way (drop the text so far), and `done` with the whole AnswerResponse.",
    )


class Citation(BaseModel):
    """One retrieved chunk and everything needed to cite it."""

    chunk_id: str
    document_id: str
    chunk_index: int = Field(description="Position of the chunk in its document (0-based).")
    path: str = Field(description="Source path, relative to the landing folder.")
    title: str
    heading_path: str
    page: int | None
    text: str
    score: float = Field(description="Higher is better: cosine similarity, BM25 or reciprocal-rank fusion.")
    delta_version: int = Field(description="Version of the gold Delta table the chunk was embedded from.")
    table_version: int = Field(description="Version of the LanceDB table that answered.")
    table_name: str
    access_groups: list[str]
    injection_suspected: bool = Field(description="The text looks like instructions to a model.")
    injection_pattern: str | None


class SearchResponse(BaseModel):
    request_id: str
    mode: Mode
    k: int
    table_name: str
    table_version: int
    model_id: str
    cached: bool
    hits: list[Citation]


class DocumentResponse(BaseModel):
    request_id: str
    document_id: str
    title: str
    path: str
    table_name: str
    table_version: int
    chunks: list[Citation]


class BackendStep(BaseModel):
    """What one backend of the generator chain did: answered, failed (why) or skipped (why)."""

    backend: str = Field(description="primary, fallback, local or extractive")
    generator: str | None
    outcome: Literal["answered", "failed", "skipped"]
    reason: str | None = None
    attempts: int = 0
    seconds: float = 0.0


class Usage(BaseModel):
    """What the answer cost: generator tokens and the seconds spent generating and embedding."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    generation_seconds: float = 0.0
    embedding_seconds: float = 0.0
    tokens_saved: int = Field(0, description="Tokens a semantic-cache hit did not spend again.")


class AnswerResponse(BaseModel):
    request_id: str
    generated: bool = Field(
        description="True when a model wrote `answer`. False: the extractive answer, the refusal, or no "
        "generator configured (`answer` empty, use `prompt`)."
    )
    answer: str | None
    llm_model: str | None
    prompt_name: str
    prompt_version: int
    prompt: str = Field(description="The rendered production prompt (sources numbered as cited).")
    table_name: str
    table_version: int
    model_id: str
    cached: bool
    passages: list[Citation]
    backend: str | None = Field(None, description="The backend of the chain that answered.")
    generator: str | None = Field(
        None, description="The model that answered (`<registered name>@<version>`)."
    )
    generator_version: str | None = None
    chain: list[BackendStep] = Field(
        default_factory=list, description="Every backend tried before the answer, and why it did not answer."
    )
    grounded: bool = Field(False, description="The answer cites at least one passage that exists.")
    citations: list[int] = Field(
        default_factory=list,
        description="Passage numbers the answer cites (1-based positions in `passages`).",
    )
    cited_passages: list[Citation] = Field(default_factory=list, description="The passages the answer cites.")
    invalid_citations: list[int] = Field(
        default_factory=list, description="Citations to no passage, removed from `answer`."
    )
    refused: bool = Field(
        False, description="Nothing retrieved was relevant enough: the sources do not contain the answer."
    )
    best_similarity: float | None = Field(
        None, description="Cosine similarity of the question and the closest passage (the refusal's test)."
    )
    usage: Usage = Field(default_factory=Usage)


class HealthResponse(BaseModel):
    status: Literal["ok", "unavailable"]
    table_name: str | None = None
    table_version: int | None = None
    model_id: str | None = None
    rows: int | None = None
    embedders: list[str] = Field(default_factory=list)
    generators: dict[str, str] = Field(
        default_factory=dict, description="Each answer backend's circuit breaker: closed, open, half_open."
    )
    error: str | None = None


class ErrorResponse(BaseModel):
    error: str
    request_id: str | None = None


MAX_FEEDBACK_COMMENT = 2000


class FeedbackRequest(BaseModel):
    """A rating of one of the caller's own /search or /answer requests (its ``request_id``)."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(..., min_length=1, max_length=64, description="The rated request's id.")
    rating: Literal["up", "down"] = Field(..., description="`up`: the results answered the question.")
    relevant_chunk_ids: list[str] = Field(
        default_factory=list, max_length=100, description="Returned chunks that answered it."
    )
    wrong_chunk_ids: list[str] = Field(
        default_factory=list, max_length=100, description="Returned chunks that were wrong or off the point."
    )
    comment: str | None = Field(None, max_length=MAX_FEEDBACK_COMMENT)


class FeedbackResponse(BaseModel):
    request_id: str = Field(..., description="This feedback request's own id.")
    rated_request_id: str
    rating: Literal["up", "down"]
    relevant_paths: list[str] = Field(
        default_factory=list, description="The documents the feedback counts as relevant (its gold paths)."
    )
