"""The turn pipeline: one customer message through rules, scenarios, memory and a response.

Entry point: ``TurnEngine.run(TurnRequest) -> TurnResult``; see ``engine.py`` for the steps.
"""

from focal.alignment.turn.engine import TurnEngine
from focal.alignment.turn.models import ScenarioPosition, TurnConfig, TurnRequest, TurnResult
from focal.alignment.turn.scenario import step_content_hash

__all__ = ["ScenarioPosition", "TurnConfig", "TurnEngine", "TurnRequest", "TurnResult", "step_content_hash"]
