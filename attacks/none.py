"""No attack: the unlearned model as released, so a table can put "before" and "after" side by side."""

from __future__ import annotations

from relearnbench.api import Attack


class NoAttack(Attack):
    """no attack: the unlearned model as released"""

    config_name = "none_attack"
    version = "1"

    def run(self, model, concept, ctx, evaluate):
        # step 0 with the concept's own prompts: the executor reuses the pre-attack scores instead of
        # sampling the same model again, and records them as post@0 and post
        evaluate(0)
