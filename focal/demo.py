"""The demo agent, "Focal Demo Store": a small online shop's support agent that works offline.

``load_demo_agent(services, tenant_id)`` creates it (or returns the live agent of that name if the
tenant already has one) with a system prompt, seven rules (one hard constraint, one answering with
an EXCLUSIVE template, one scoped to the return scenario), a "Return an item" scenario of five
steps, SUGGEST / EXCLUSIVE / FALLBACK templates and three variables. Rule conditions, scenario
entry and transition conditions are embedded with ``services.embedding_provider``.

The texts are written for the lexical ``HashingEmbeddingProvider``: conditions are lists of the
words customers actually type ("return", "send back", "damaged", "yes create label") and avoid
filler words, so a plausible message shares words with the right condition and with no other.
With the ``OfflineLLMProvider`` the agent then holds a sensible conversation
(``DEMO_CONVERSATION``): greeting, a shipping question answered from a rule, a return started,
advanced and finished through the scenario's steps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID, uuid4

from focal.alignment.models import (
    Agent,
    Rule,
    Scenario,
    ScenarioStep,
    Scope,
    StepTransition,
    Template,
    TemplateMode,
    Variable,
)
from focal.logging import get_logger

if TYPE_CHECKING:
    from focal.bootstrap import FocalServices

DEMO_AGENT_NAME = "Focal Demo Store"

# A conversation the demo agent handles sensibly with the offline providers (used by tests and docs).
DEMO_CONVERSATION = [
    "Hello!",
    "How much does shipping cost?",
    "I would like to return an item",
    "My order number is FD-10234",
    "The kettle arrived damaged",
    "Yes please, create the return label",
    "Can I talk to a human?",
]

SYSTEM_PROMPT = (
    "You are the customer support assistant of Focal Demo Store, a small online shop for kitchen "
    "appliances. Answer briefly and kindly, in the customer's language. Only state shop policies "
    "that you are given as rules; if you do not know something, say so and offer a human colleague."
)


async def load_demo_agent(services: FocalServices, tenant_id: UUID) -> Agent:
    """Create the demo agent in ``tenant_id``, or return the existing live one of that name."""
    store = services.config_store
    offset = 0
    while True:
        agents, total = await store.get_agents(tenant_id, limit=100, offset=offset)
        for agent in agents:
            if agent.name == DEMO_AGENT_NAME:
                return agent
        offset += len(agents)
        if not agents or offset >= total:
            break

    agent = Agent(
        tenant_id=tenant_id,
        name=DEMO_AGENT_NAME,
        description="Sample support agent of a small online shop (rules, a return scenario, templates).",
        system_prompt=SYSTEM_PROMPT,
        temperature=0.3,
        max_tokens=400,
    )
    await store.save_agent(agent)
    try:
        await _populate(services, agent)
    except BaseException:
        # Never leave a half-built demo agent behind: the next call would reuse it as if complete.
        await store.delete_agent(tenant_id, agent.id)
        raise
    get_logger("focal.demo").info("demo_agent_created", tenant_id=str(tenant_id), agent_id=str(agent.id))
    return agent


async def _populate(services: FocalServices, agent: Agent) -> None:
    store = services.config_store
    embedder = services.embedding_provider

    def template(name: str, text: str, mode: TemplateMode) -> Template:
        return Template(tenant_id=agent.tenant_id, agent_id=agent.id, name=name, text=text, mode=mode)

    greeting = template(
        "Greeting",
        "Hello and welcome to {store_name}! I can help you with orders, deliveries, payments and returns.",
        TemplateMode.SUGGEST,
    )
    handover = template(
        "Human handover",
        "I am passing you to a human colleague, who will reply here within one business day. "
        "You can also write to {support_email}.",
        TemplateMode.EXCLUSIVE,
    )
    fallback = template(
        "Temporary trouble",
        "Sorry, I cannot answer right now. Please try again in a minute or write to {support_email}.",
        TemplateMode.FALLBACK,
    )
    ask_order = template(
        "Return: ask order number",
        "I can help you return an item. What is your order number? It starts with FD- and is in your "
        "order confirmation email.",
        TemplateMode.EXCLUSIVE,
    )
    ask_reason = template(
        "Return: ask reason",
        "Thank you. Why are you sending it back: is it damaged, the wrong item, or did you change your mind?",
        TemplateMode.EXCLUSIVE,
    )
    confirm = template(
        "Return: confirm",
        "Understood. Items can be returned within {return_window_days} days and the return label is free. "
        "Shall I create the return label? Please answer yes or no.",
        TemplateMode.EXCLUSIVE,
    )
    registered = template(
        "Return: registered",
        "Done! The return label is on its way to your email. Pack the item and drop it at any post office; "
        "we refund you within 14 days of receiving it.",
        TemplateMode.EXCLUSIVE,
    )
    cancelled = template(
        "Return: cancelled",
        "No problem, I have not created a return. Is there anything else I can do for you?",
        TemplateMode.EXCLUSIVE,
    )
    for item in (greeting, handover, fallback, ask_order, ask_reason, confirm, registered, cancelled):
        await store.save_template(item)

    for name, value, description in (
        ("store_name", DEMO_AGENT_NAME, "The shop's name"),
        ("support_email", "support@focal-demo.example", "Where customers can write"),
        ("return_window_days", 30, "Days a customer has to return an item"),
    ):
        variable = Variable(
            tenant_id=agent.tenant_id,
            agent_id=agent.id,
            name=name,
            default_value=value,
            description=description,
        )
        await store.save_variable(variable)

    # --- the return scenario ---------------------------------------------------------------
    step_ids = {key: uuid4() for key in ("order", "reason", "confirm", "registered", "cancelled")}
    transition_texts = [
        ("order", "reason", "order number FD"),
        ("reason", "confirm", "damaged broken wrong item arrived changed mind"),
        ("confirm", "registered", "yes please create return label"),
        ("confirm", "cancelled", "no cancel keep it"),
    ]
    entry_condition = "return an item send back return my order"
    vectors = await embedder.embed_batch([entry_condition, *(text for _, _, text in transition_texts)])
    entry_vector, transition_vectors = vectors[0], vectors[1:]
    transitions: dict[str, list[StepTransition]] = {key: [] for key in step_ids}
    for (source, target, text), vector in zip(transition_texts, transition_vectors, strict=True):
        transitions[source].append(
            StepTransition(to_step_id=step_ids[target], condition_text=text, condition_embedding=vector)
        )

    def step(key: str, name: str, description: str, shown: Template, **extra: object) -> ScenarioStep:
        return ScenarioStep(
            id=step_ids[key],
            name=name,
            description=description,
            transitions=transitions[key],
            template_ids=[shown.id],
            **extra,
        )

    scenario = Scenario(
        tenant_id=agent.tenant_id,
        agent_id=agent.id,
        name="Return an item",
        description="Collect the order number and the reason, then create a return label.",
        entry_step_id=step_ids["order"],
        entry_condition_text=entry_condition,
        entry_embedding=entry_vector,
        embedding_model=embedder.model_id,
        steps=[
            step(
                "order",
                "Ask for the order number",
                "Ask which order the item is from.",
                ask_order,
                collects_fields=["order_number"],
            ),
            step(
                "reason",
                "Ask for the reason",
                "Ask why the item is returned.",
                ask_reason,
                collects_fields=["return_reason"],
            ),
            step("confirm", "Confirm the return", "State the policy and ask for confirmation.", confirm),
            step("registered", "Return registered", "The label is sent.", registered, is_terminal=True),
            step(
                "cancelled", "Return cancelled", "The customer keeps the item.", cancelled, is_terminal=True
            ),
        ],
        tags=["demo", "returns"],
    )
    await store.save_scenario(scenario)

    # --- rules ---------------------------------------------------------------------------------
    specs: list[dict[str, object]] = [
        {
            "name": "Greet",
            "condition_text": "hello hi hey good morning",
            "action_text": "Greet the customer and offer help with orders, deliveries, payments and returns.",
            "attached_template_ids": [greeting.id],
            "max_fires_per_session": 1,
        },
        {
            "name": "Shipping cost",
            "condition_text": "how much shipping cost delivery fee",
            "action_text": "Shipping is free for orders above 50 EUR; below that it costs 4.90 EUR.",
            "priority": 10,
        },
        {
            "name": "Delivery status",
            "condition_text": "where parcel delivery status tracking when arrive",
            "action_text": "Orders ship within 2 business days; the tracking link is in the shipping email.",
        },
        {
            "name": "Payment methods",
            "condition_text": "pay payment methods card paypal invoice",
            "action_text": "We accept cards and PayPal, and invoices for returning customers.",
        },
        {
            "name": "Refund timing",
            "condition_text": "refund money back when",
            "action_text": "Refunds are paid within 14 days after we receive the returned item.",
        },
        {
            "name": "No refund promises",
            "condition_text": "refund money back compensation",
            "action_text": "Never promise a refund or its amount before the returned item is inspected.",
            "is_hard_constraint": True,
            "priority": 100,
        },
        {
            "name": "Human handover",
            "condition_text": "talk human person real agent speak someone",
            "action_text": "Hand the conversation over to a human colleague.",
            "attached_template_ids": [handover.id],
            "priority": 50,
        },
        {
            "name": "Free return label",
            "condition_text": "return label cost free postage",
            "action_text": "Return labels are free of charge.",
            "scope": Scope.SCENARIO,
            "scope_id": scenario.id,
        },
    ]
    rule_vectors = await embedder.embed_batch([str(spec["condition_text"]) for spec in specs])
    for spec, vector in zip(specs, rule_vectors, strict=True):
        rule = Rule(
            tenant_id=agent.tenant_id,
            agent_id=agent.id,
            embedding=vector,
            embedding_model=embedder.model_id,
            **spec,
        )
        await store.save_rule(rule)
