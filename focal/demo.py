"""The demo agent, "Focal Demo Store": a small online shop's support agent that works offline.

``load_demo_agent(services, tenant_id, shop)`` creates it (or returns the live agent of that name
if the tenant already has one) with a system prompt, eight rules (one hard constraint, one
answering with an EXCLUSIVE template, one scoped to the return scenario), a "Return an item"
scenario of five steps, SUGGEST / EXCLUSIVE / FALLBACK templates, variables and two tools of the
demo shop (``focal.demo_shop``, which ``focal demo`` serves on loopback):

- the order number is collected into ``order_number`` (by pattern) and the reason into
  ``return_reason``; each step waits until its field is filled;
- ``order`` is resolved by the tool ``demo_lookup_order`` (the shop's ``GET /orders/{n}``) when
  a template shows ``{order.item}``;
- at the last step the model is offered ``demo_create_return_label`` (``POST /returns``), which
  really creates the label in the shop (the offline model calls it with the known values).

The tool definitions are tenant-wide and point at the shop's current URL with its key (their
secret): every call updates them, since the shop's port changes with each start. Rule
conditions, scenario entry and transition conditions are embedded with
``services.embedding_provider``.

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

from pydantic import SecretStr

from focal.alignment.models import (
    Agent,
    Rule,
    Scenario,
    ScenarioStep,
    Scope,
    StepTransition,
    Template,
    TemplateMode,
    ToolActivation,
    ToolDefinition,
    Variable,
)
from focal.demo_shop import KEY_HEADER, DemoShop
from focal.errors import ConfigurationError
from focal.logging import get_logger
from focal.tools.models import HttpToolSpec

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


LOOKUP_TOOL = "demo_lookup_order"
LABEL_TOOL = "demo_create_return_label"
ORDER_NUMBER_PATTERN = r"FD-\d{5}"
_ORDER_NUMBER_PARAMETER = {
    "type": "string",
    "pattern": f"^{ORDER_NUMBER_PATTERN}$",
    "description": "the order number, FD- and five digits",
}


async def define_demo_tools(services: FocalServices, tenant_id: UUID, shop: DemoShop) -> None:
    """Create or update the demo shop's tools in ``tenant_id`` for the shop's current URL and key."""
    if shop.url is None:
        raise ConfigurationError("the demo shop is not being served: start it before loading the demo agent")
    store = services.config_store
    wanted = [
        ToolDefinition(
            tenant_id=tenant_id,
            name=LOOKUP_TOOL,
            description="Look an order of the shop up by its number (item, delivery date).",
            parameters={
                "type": "object",
                "properties": {"order_number": _ORDER_NUMBER_PARAMETER},
                "required": ["order_number"],
            },
            http=HttpToolSpec(url_template=f"{shop.url}/orders/{{order_number}}", secret_header=KEY_HEADER),
            secret=SecretStr(shop.api_key),
        ),
        ToolDefinition(
            tenant_id=tenant_id,
            name=LABEL_TOOL,
            description="Create the free return label of an order; the customer gets it by email.",
            parameters={
                "type": "object",
                "properties": {
                    "order_number": _ORDER_NUMBER_PARAMETER,
                    "return_reason": {"type": "string", "description": "why the item goes back"},
                },
                "required": ["order_number", "return_reason"],
            },
            http=HttpToolSpec(method="POST", url_template=f"{shop.url}/returns", secret_header=KEY_HEADER),
            secret=SecretStr(shop.api_key),
        ),
    ]
    for definition in wanted:
        existing = await store.get_tool_definition(tenant_id, definition.name)
        if existing is not None:
            definition = definition.model_copy(update={"id": existing.id})
        await store.save_tool_definition(definition)


async def load_demo_agent(services: FocalServices, tenant_id: UUID, shop: DemoShop) -> Agent:
    """Create the demo agent in ``tenant_id``, or return the existing live one of that name; either
    way the demo tools point at ``shop`` (which must be served: ``shop.url`` set)."""
    await define_demo_tools(services, tenant_id, shop)
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
        "Thank you. I found order {order_number}: your {order.item}, delivered on {order.delivered_on}. "
        "Why are you sending it back: is it damaged, the wrong item, or did you change your mind?",
        TemplateMode.EXCLUSIVE,
    )
    confirm = template(
        "Return: confirm",
        "Understood ({return_reason}). Items can be returned within {return_window_days} days and the "
        "return label is free. Shall I create the return label for your {order.item}? "
        "Please answer yes or no.",
        TemplateMode.EXCLUSIVE,
    )
    registered = template(
        "Return: registered",
        "Done! The return label for order {order_number} is on its way to your email. Pack the item and "
        "drop it at any post office; we refund you within 14 days of receiving it.",
        TemplateMode.SUGGEST,
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
    for variable in (
        Variable(
            tenant_id=agent.tenant_id,
            agent_id=agent.id,
            name="order_number",
            description="The order the customer returns an item from (FD- and five digits)",
            extraction_pattern=ORDER_NUMBER_PATTERN,
        ),
        Variable(
            tenant_id=agent.tenant_id,
            agent_id=agent.id,
            name="return_reason",
            description="Why the item goes back",
            extraction_pattern=r"(?i)\b(damaged|broken|wrong item|changed my mind|too small|too big)\b",
            extract_with_llm=True,
        ),
        Variable(
            tenant_id=agent.tenant_id,
            agent_id=agent.id,
            name="order",
            description="The order as the shop knows it",
            resolver_tool_id=LOOKUP_TOOL,
            cache_ttl_seconds=300,
        ),
    ):
        await store.save_variable(variable)
    for tool_id in (LOOKUP_TOOL, LABEL_TOOL):
        await store.save_tool_activation(
            ToolActivation(tenant_id=agent.tenant_id, agent_id=agent.id, tool_id=tool_id)
        )

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
            step(
                "registered",
                "Return registered",
                "Create the return label with the tool, then confirm it is on its way.",
                registered,
                is_terminal=True,
                tool_ids=[LABEL_TOOL],
            ),
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
