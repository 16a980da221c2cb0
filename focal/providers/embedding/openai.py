"""``OpenAIEmbeddingProvider``: the embeddings endpoint through the official ``openai`` SDK.

Works with OpenAI and with OpenAI-compatible servers (``base_url`` ending in ``/v1``). Batches
larger than ``batch_size`` (2048 inputs, OpenAI's per-request limit) are split and sent one after
another, so results come back in input order; within a batch the vendor's ``index`` field, not the
list order, decides where each vector goes. ``dimensions`` is forwarded only when given, since
only ``text-embedding-3`` and later models accept it. Every returned vector is checked against
``dimensions``: a vector of another length is an ``InvalidResponseError``, never stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

from openai.types import CreateEmbeddingResponse
from pydantic import SecretStr

from focal.errors import ConfigurationError, InvalidResponseError
from focal.providers.embedding.base import EmbeddingProvider, validate_texts
from focal.providers.llm.openai import build_openai_client, openai_errors
from focal.providers.retry import ProviderCall, RetryPolicy

PROVIDER = "openai"
DEFAULT_MODEL = "text-embedding-3-small"
VENDOR_BATCH_SIZE = 2048
NATIVE_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}


class OpenAIEmbeddingProvider(EmbeddingProvider):
    """OpenAI (or compatible) embeddings. ``dimensions`` is required for models Focal does not know."""

    def __init__(
        self,
        *,
        api_key: str | SecretStr,
        model: str = DEFAULT_MODEL,
        dimensions: int | None = None,
        base_url: str | None = None,
        timeout_seconds: float = 60,
        max_attempts: int = 3,
        retry_policy: RetryPolicy | None = None,
        batch_size: int = VENDOR_BATCH_SIZE,
    ) -> None:
        if not model or not model.strip():
            raise ConfigurationError("OpenAIEmbeddingProvider needs a model name (FOCAL_EMBEDDING__MODEL)")
        if dimensions is not None and dimensions < 1:
            raise ConfigurationError(f"dimensions must be >= 1, got {dimensions}")
        if dimensions is None and model not in NATIVE_DIMENSIONS:
            raise ConfigurationError(
                f"unknown embedding model {model!r}: set its vector length (FOCAL_EMBEDDING__DIMENSIONS)"
            )
        if not 1 <= batch_size <= VENDOR_BATCH_SIZE:
            raise ConfigurationError(f"batch_size must be in 1..{VENDOR_BATCH_SIZE}, got {batch_size}")
        self._model = model
        self._requested_dimensions = dimensions
        self._dimensions = dimensions if dimensions is not None else NATIVE_DIMENSIONS[model]
        self._batch_size = batch_size
        self._client, self._api_key = build_openai_client(api_key, base_url, timeout_seconds)
        self._policy = retry_policy or RetryPolicy(max_attempts=max_attempts)

    @property
    def dimensions(self) -> int:
        return self._dimensions

    @property
    def model_id(self) -> str:
        return self._model

    def __repr__(self) -> str:
        return f"OpenAIEmbeddingProvider(model={self._model!r}, dimensions={self._dimensions})"

    async def aclose(self) -> None:
        await self._client.close()

    async def embed_batch(self, texts: Sequence[str]) -> list[list[float]]:
        validate_texts(texts)
        options: dict[str, Any] = {"encoding_format": "float"}
        if self._requested_dimensions is not None:
            options["dimensions"] = self._requested_dimensions
        vectors: list[list[float]] = []
        async with ProviderCall(
            provider=PROVIDER, model=self._model, operation="embed_batch", policy=self._policy
        ) as call:
            for start in range(0, len(texts), self._batch_size):
                batch = list(texts[start : start + self._batch_size])
                result = await call.run(partial(self._create, batch, options))
                vectors.extend(self._vectors_in_order(result, len(batch)))
                if result.usage is not None:
                    call.add_tokens(result.usage.prompt_tokens, 0)
        return vectors

    async def _create(self, batch: list[str], options: dict[str, Any]) -> CreateEmbeddingResponse:
        with openai_errors(PROVIDER):
            return await self._client.embeddings.create(model=self._model, input=batch, **options)

    def _vectors_in_order(self, result: CreateEmbeddingResponse, expected: int) -> list[list[float]]:
        try:
            items = sorted(result.data, key=lambda item: item.index)
            vectors = [list(item.embedding) for item in items]
            indexes = [item.index for item in items]
        except (AttributeError, TypeError, ValueError) as exc:
            raise InvalidResponseError(
                f"{PROVIDER}: malformed embeddings response: {exc}", provider=PROVIDER
            ) from exc
        if indexes != list(range(expected)):
            raise InvalidResponseError(
                f"{PROVIDER}: expected {expected} embeddings indexed from 0, got indexes {indexes}",
                provider=PROVIDER,
            )
        for vector in vectors:
            if len(vector) != self._dimensions:
                raise InvalidResponseError(
                    f"{PROVIDER}: embedding has {len(vector)} dimensions, expected {self._dimensions}",
                    provider=PROVIDER,
                )
        return vectors
