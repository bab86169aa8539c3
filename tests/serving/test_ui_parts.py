"""Small parts of the dashboard on their own: the aggregates' memory, plots, the sign-in redirect target,
and the loss curve a run keeps for its plot."""

from __future__ import annotations

import re

from serving.ui import charts
from serving.ui.cache import Recent
from serving.ui.routes.signin import safe_next
from training.trainer import loss_curve


def test_recent_computes_once_per_key_until_it_is_stale() -> None:
    calls: list[str] = []

    def compute(name: str) -> str:
        calls.append(name)
        return name.upper()

    fresh = Recent(ttl_s=60)
    assert [fresh.get(k, lambda k=k: compute(k)) for k in ("a", "a", "b", "a")] == ["A", "A", "B", "A"]
    assert calls == ["a", "b"]
    stale = Recent(ttl_s=0)
    stale.get("a", lambda: compute("a"))
    stale.get("a", lambda: compute("a"))
    assert calls == ["a", "b", "a", "a"]


def test_plots_are_self_contained_svg_with_a_point_per_value() -> None:
    drawn = charts.curves(
        "loss", x_title="step", y_title="loss", series=(charts.Series("run 1", points=((1, 2.0), (2, 1.0), (3, 0.5))),)
    )
    assert drawn.startswith("<svg") and drawn.count('class="dot ') == 3
    # Nothing to fetch: no script or stylesheet from anywhere (pygal's inline config script loads nothing).
    assert re.search(r"<script[^>]*\bsrc=", drawn) is None
    assert re.search(r"(href|src)=\"https?://", drawn) is None
    empty = charts.bars("none", x_title="x", y_title="y", labels=(), series=())
    assert "no data yet" in empty


def test_sign_in_only_ever_returns_to_the_dashboard() -> None:
    assert safe_next("/ui/review?before=3") == "/ui/review?before=3"
    for target in (None, "", "https://evil.example/ui", "//evil.example", "/ui//evil", "/admin", "/ui\\x", "/ui" * 300):
        assert safe_next(target) == "/ui", target


def test_a_loss_curve_keeps_every_point_up_to_its_limit_then_thins_evenly() -> None:
    history = [{"step": s, "loss": 1 / s} for s in range(1, 1001)] + [{"step": 1000, "train_loss": 0.3}]
    assert loss_curve(history[:10]) == [[float(s), 1 / s] for s in range(1, 11)]
    thinned = loss_curve(history, max_points=50)
    assert len(thinned) == 50
    assert thinned[0] == [1.0, 1.0] and thinned[-1] == [1000.0, 0.001]
    steps = [point[0] for point in thinned]
    assert steps == sorted(steps)


def test_a_long_loss_curve_is_drawn_with_at_most_sixty_points() -> None:
    from serving.ui.routes.versions import POINTS_PER_CURVE, loss_chart
    from store.models import TrainingRun

    run = TrainingRun(id=7, trigger="api", metrics={"sft": {"losses": [[s, 1 / s] for s in range(1, 201)]}})
    drawn = loss_chart([run])
    assert drawn.count('class="dot ') == POINTS_PER_CURVE == 60
    assert "run 7 sft" in drawn
