import pytest

from relearnbench.metrics.related import Related


def test_related_is_judge_accuracy_on_toy(toy_judge, concept, real_eval, make_ctx):
    ctx = make_ctx(toy_judge)
    scores = {s.metric: s for s in Related().compute(real_eval(concept, ctx))}
    assert set(scores) == {"related.related", "related.unrelated"}
    for s in scores.values():
        assert s.info["measure"] == "judge accuracy" and s.value >= 95 and s.n == 8
    assert list(scores["related.related"].info["per_prompt"]) == list(concept.related)

    class SelfDestructed(real_eval):
        """Related prompts render as something else (a circle instead of a diamond)."""

        def images(self, which):
            if which == "related" and which not in self._images:
                images, texts, index = super().images("unrelated")
                self._images[which] = (images, [p.text for p in self.prompts("related") for _ in range(self.n)],
                                       index)
            return super().images(which)

    broken = {s.metric: s for s in Related().compute(SelfDestructed(concept, ctx))}
    assert broken["related.related"].value <= 5
    per_prompt = broken["related.related"].info["per_prompt"]  # equal images per prompt: their mean is the value
    assert sum(per_prompt.values()) / len(per_prompt) == pytest.approx(broken["related.related"].value)
    assert broken["related.unrelated"].value >= 95
