"""Embeddings of configuration objects, computed when they are created or edited.

A rule is embedded from its condition and action together (the text a customer message is
compared with); a scenario from its entry condition and each transition's condition. Every vector
is tagged with the provider's ``model_id`` so searches compare only vectors of one model.
Embedding happens before anything is saved: a provider failure leaves the store untouched.
"""

from __future__ import annotations

from focal.alignment.models import Rule, Scenario
from focal.providers.embedding.base import EmbeddingProvider

__all__ = ["embed_rule", "embed_scenario", "rule_embedding_text"]


def rule_embedding_text(rule: Rule) -> str:
    return f"{rule.condition_text}\n{rule.action_text}"


async def embed_rule(provider: EmbeddingProvider, rule: Rule) -> Rule:
    """A copy of ``rule`` with a fresh embedding of its condition and action."""
    vector = await provider.embed(rule_embedding_text(rule))
    return rule.model_copy(update={"embedding": vector, "embedding_model": provider.model_id})


async def embed_scenario(provider: EmbeddingProvider, scenario: Scenario) -> Scenario:
    """A copy of ``scenario`` with its entry condition and every transition condition embedded
    (one batch call for all of them)."""
    texts: list[str] = []
    if scenario.entry_condition_text:
        texts.append(scenario.entry_condition_text)
    texts.extend(t.condition_text for step in scenario.steps for t in step.transitions)
    vectors = iter(await provider.embed_batch(texts)) if texts else iter(())
    entry_embedding = next(vectors) if scenario.entry_condition_text else None
    steps = [
        step.model_copy(
            update={
                "transitions": [
                    t.model_copy(update={"condition_embedding": next(vectors)}) for t in step.transitions
                ]
            }
        )
        for step in scenario.steps
    ]
    return scenario.model_copy(
        update={"entry_embedding": entry_embedding, "steps": steps, "embedding_model": provider.model_id}
    )
