"""The run's pictures: 1-based epochs, the best circled, the baseline drawn over the population when one was compared."""

from __future__ import annotations

from pathlib import Path

import pytest

from popvae.population import plots


def rows(members: int, epochs: int, tau: float) -> list[dict]:
    return [{"epoch": e + 1, "member": m, "strategy": "fixed" if m == 1 else "linear_increase", "tau": tau + 0.1 * e * (m - 1),
             "score": 100.0 - e - m, "is_best": m == members} for e in range(epochs) for m in range(1, members + 1)]


def test_the_baseline_is_drawn_over_the_population(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = {}
    monkeypatch.setattr(plots, "write_figure", lambda fig, path, dpi=100: drawn.setdefault(path.name, fig) and path)
    baseline = [{"epoch": e + 1, "member": 1, "strategy": "anneal", "tau": 0.9**e, "score": 120.0 - e, "is_best": True}
                for e in range(3)]
    plots.plot_history(rows(2, 3, 1.0), tmp_path, run_id="demo", select_on="val", baseline=baseline)
    for name, column in (("tau.png", "tau"), ("loss.png", "score")):
        ax = drawn[name].axes[0]
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert set(lines) == {"1 fixed", "2 linear_increase", "baseline (annealed)"}
        assert list(lines["baseline (annealed)"].get_xdata()) == [1, 2, 3]  # epochs counted from 1, as the console does
        assert list(lines["baseline (annealed)"].get_ydata()) == [r[column] for r in baseline]
        assert ax.get_title().startswith("run demo:")
    drawn.clear()
    plots.plot_history(rows(2, 3, 1.0), tmp_path, run_id="demo")
    assert "baseline (annealed)" not in {line.get_label() for line in drawn["tau.png"].axes[0].get_lines()}
