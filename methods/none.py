"""No unlearning: the base model as released, the row every leaderboard compares against."""

from __future__ import annotations

from relearnbench.api import Concept, Context, Method, Model


class NoUnlearning(Method):
    """No unlearning: the base model as released."""

    config_name = "none"
    version = "1"

    def unlearn(self, model: Model, concept: Concept, ctx: Context) -> None:
        return None
