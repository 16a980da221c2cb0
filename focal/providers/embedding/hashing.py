"""``HashingEmbeddingProvider``: deterministic lexical vectors with no model and no network.

Each text becomes counts of its lower-cased words and adjacent word pairs (bigrams), hashed into
``dimensions`` buckets (the "hashing trick") with a signed blake2b hash, then L2-normalised. The
hash is blake2b, not Python's ``hash()``, so vectors are identical across processes and runs
(``PYTHONHASHSEED`` does not matter) and can be stored.

This is lexical, not semantic: texts that share words (and word order) get a higher cosine
similarity; synonyms ("refund" vs "money back") score nothing. It exists so that Focal runs and
tests without an embedding service, not to rival a learned model.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections.abc import Sequence

from focal.errors import ConfigurationError
from focal.providers.embedding.base import EmbeddingProvider, validate_texts

_WORD = re.compile(r"\w+(?:'\w+)?")


class HashingEmbeddingProvider(EmbeddingProvider):
    """Feature-hashed word and bigram counts, L2-normalised; lexical, not semantic."""

    def __init__(self, *, dimensions: int = 1536) -> None:
        if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1:
            raise ConfigurationError(f"dimensions must be an integer >= 1, got {dimensions!r}")
        self._dimensions = dimensions

    @property
    def dimensions(self) -> int:
        return self._dimensions

    @property
    def model_id(self) -> str:
        return f"hashing-{self._dimensions}"

    def __repr__(self) -> str:
        return f"HashingEmbeddingProvider(dimensions={self._dimensions})"

    async def embed_batch(self, texts: Sequence[str]) -> list[list[float]]:
        validate_texts(texts)
        return [self.vector(text) for text in texts]

    def vector(self, text: str) -> list[float]:
        """The embedding of ``text`` (synchronous: pure computation)."""
        words = _WORD.findall(text.lower())
        # Text without word characters ("?!") still gets a stable, non-zero vector.
        features = [f"w:{word}" for word in words] or [f"t:{text.strip()}"]
        features += [f"b:{first} {second}" for first, second in itertools.pairwise(words)]
        buckets: dict[int, float] = {}
        for feature in features:
            digest = int.from_bytes(hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest(), "big")
            # The top bit picks the sign so that colliding features tend to cancel, not pile up.
            sign = -1.0 if digest >> 63 else 1.0
            index = digest % self._dimensions
            buckets[index] = buckets.get(index, 0.0) + sign
        vector = [0.0] * self._dimensions
        # Only the touched buckets are non-zero: normalising them alone keeps a turn's embedding cheap.
        norm = math.sqrt(sum(value * value for value in buckets.values()))
        if norm == 0.0:  # every feature cancelled out in a tiny dimension
            vector[0] = 1.0
            return vector
        for index, value in buckets.items():
            vector[index] = value / norm
        return vector
