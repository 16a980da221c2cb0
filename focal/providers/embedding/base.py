"""The embedding provider interface, and the input checks every implementation shares."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from focal.errors import ProviderInputError


class EmbeddingProvider(ABC):
    """Turns text into fixed-length vectors; ``embed_batch`` keeps the input order."""

    @property
    @abstractmethod
    def dimensions(self) -> int:
        """Length of every vector this provider returns."""

    @property
    @abstractmethod
    def model_id(self) -> str:
        """The embedding model ("hashing-<dimensions>" for the offline provider)."""

    async def embed(self, text: str) -> list[float]:
        """One vector for one text."""
        validate_texts([text])
        vectors = await self.embed_batch([text])
        return vectors[0]

    @abstractmethod
    async def embed_batch(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order; splits into vendor-sized batches itself."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, a no-op for providers without clients
        """Release network resources (HTTP connection pools). Safe to call more than once."""


def validate_texts(texts: Sequence[str]) -> None:
    """Raise ``ProviderInputError`` for an empty batch or an empty/whitespace text."""
    if isinstance(texts, str):
        raise ProviderInputError("embed_batch takes a list of strings, not a single string")
    if len(texts) == 0:
        raise ProviderInputError("cannot embed an empty batch")
    for index, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ProviderInputError(f"text {index} to embed is empty or not a string")
