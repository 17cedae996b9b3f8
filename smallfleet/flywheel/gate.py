"""The promotion gate: a candidate version replaces the served one only when it provably does
no worse.

All three checks must hold:
- **not worse**: on each evaluation set (the frozen set, and a held-back slice of fresh
  labelled traffic when there is one), a paired test on the same items:
  - for kinds judged right or wrong (labels), an exact one-sided McNemar test on the paired
    right/wrong answers does not find the candidate worse at level `alpha`;
  - for kinds whose items get a graded score (`TaskKind.item_scores`: field F1, ROUGE-L),
    a paired bootstrap of the mean score difference: the lower `alpha` confidence bound of
    the candidate's improvement must clear `-margin`;
- **calibrated**: the candidate's expected calibration error on the frozen set is at most
  `max_ece`;
- **saves at least as much**: at the task's quality target, its guaranteed threshold accepts
  at least as large a share of validation as the served version's (fewer escalations).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from smallfleet.calibration import expected_calibration_error


CALIBRATE_ON = ("trusted", "all")


@dataclass
class GateSettings:
    alpha: float = 0.05
    """Significance of the paired test that would find the candidate worse."""
    max_ece: float = 0.10
    """Largest expected calibration error the candidate may have on the frozen set."""
    margin: float = 0.01
    """Paired bootstrap (graded kinds): how far the lower confidence bound of the candidate's mean score improvement
    may fall below zero (non-inferiority margin)."""
    resamples: int = 2000
    """Paired bootstrap: number of resamples (seeded, so a decision can be reproduced)."""
    calibrate_on: str = "all"
    """What a candidate is calibrated on (and its threshold set on) when the task has no validation file: `all` = a
    slice of everything it trains on, upstream answers included, so the guarantee is agreement with the upstream
    (the frontier model the fleet stands in for); `trusted` = a seeded slice of the task's own data plus human and
    feedback answers only, so the guarantee is against labels people vouch for (upstream answers are trained on,
    never calibrated on: an upstream right 83% of the time would otherwise teach the candidate that it is wrong
    17% of the time on clean data)."""

    def __post_init__(self) -> None:
        if self.calibrate_on not in CALIBRATE_ON:
            raise ValueError(f"calibrate_on must be one of {', '.join(CALIBRATE_ON)}, got {self.calibrate_on!r}")


def mcnemar_worse(served: list[bool], candidate: list[bool]) -> dict:
    """Exact one-sided McNemar test of "the candidate is worse" on paired right/wrong answers."""
    from scipy.stats import binom

    served, candidate = np.asarray(served, dtype=bool), np.asarray(candidate, dtype=bool)
    only_served = int((served & ~candidate).sum())  # the served version right, the candidate wrong
    only_candidate = int((~served & candidate).sum())
    discordant = only_served + only_candidate
    p = float(binom.sf(only_served - 1, discordant, 0.5)) if discordant else 1.0  # P(X >= only_served | no difference)
    return {"n": int(len(served)), "served_quality": float(served.mean()) if len(served) else None,
            "candidate_quality": float(candidate.mean()) if len(candidate) else None,
            "served_only_right": only_served, "candidate_only_right": only_candidate, "p_worse": p}  # fmt: skip


def bootstrap_worse(served: list[float], candidate: list[float], alpha: float, margin: float,
                    resamples: int = 2000, seed: int = 0) -> dict:  # fmt: skip
    """Paired bootstrap of the candidate's mean score improvement over the served version on the same items:
    `worse` when the lower (one-sided, level `alpha`) confidence bound of the improvement is below `-margin`."""
    served, candidate = np.asarray(served, dtype=float), np.asarray(candidate, dtype=float)
    diff = candidate - served
    n = len(diff)
    if n:
        rng = np.random.default_rng(seed)
        means = diff[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
        lower = float(np.quantile(means, alpha))
    else:
        lower = 0.0
    return {"n": int(n), "served_quality": float(served.mean()) if n else None,
            "candidate_quality": float(candidate.mean()) if n else None, "improvement": float(diff.mean()) if n else 0.0,
            "lower_bound": lower, "margin": margin, "resamples": resamples, "worse": lower < -margin}  # fmt: skip


def _not_worse(name: str, answers: dict, settings: GateSettings) -> tuple[dict, dict]:
    """(test, check) of one evaluation set: bootstrap on graded scores when both versions have them, else McNemar."""
    if answers.get("served_scores") is not None and answers.get("candidate_scores") is not None:
        test = bootstrap_worse(answers["served_scores"], answers["candidate_scores"], settings.alpha, settings.margin,
                               settings.resamples)  # fmt: skip
        test["test"] = "paired bootstrap"
        detail = (f"mean score {test['candidate_quality']:.4f} vs {test['served_quality']:.4f} on {test['n']} rows; "
                  f"paired bootstrap: improvement {test['improvement']:+.4f}, lower {1 - settings.alpha:.0%} bound "
                  f"{test['lower_bound']:+.4f} (margin -{settings.margin})")  # fmt: skip
        return test, {"check": f"not worse on {name}", "passed": not test["worse"], "detail": detail}
    test = mcnemar_worse(answers["served"], answers["candidate"])
    test["test"] = "McNemar"
    return test, {"check": f"not worse on {name}", "passed": test["p_worse"] >= settings.alpha,
                  "detail": f"{test['candidate_quality']:.4f} vs {test['served_quality']:.4f} on {test['n']} rows; "
                            f"McNemar p(worse) = {test['p_worse']:.3g} (level {settings.alpha})"}  # fmt: skip


def decide(sets: dict[str, dict], candidate_confidence: list[float], candidate_correct: list[bool],
           served_coverage: float, candidate_coverage: float, settings: GateSettings) -> dict:  # fmt: skip
    """The gate's decision.

    Args:
        sets: evaluation set name -> {"served": [bool], "candidate": [bool]} paired right/wrong answers, plus
            `served_scores` / `candidate_scores` ([float], paired graded scores) for graded kinds.
        candidate_confidence, candidate_correct: the candidate's answers on the frozen set (calibration).
        served_coverage, candidate_coverage: validation share each accepts at the task's target (guaranteed).
    """
    checks = []
    tests = {}
    for name, answers in sets.items():
        tests[name], check = _not_worse(name, answers, settings)
        checks.append(check)
    ece = expected_calibration_error(np.asarray(candidate_confidence), np.asarray(candidate_correct, dtype=bool))
    checks.append({"check": "calibrated", "passed": ece <= settings.max_ece,
                   "detail": f"ECE {ece:.4f} (limit {settings.max_ece})"})  # fmt: skip
    checks.append({"check": "saves at least as much", "passed": candidate_coverage >= served_coverage,
                   "detail": f"accepts {candidate_coverage:.1%} of validation at the target vs {served_coverage:.1%}"})
    passed = all(c["passed"] for c in checks)
    failed = [c["check"] for c in checks if not c["passed"]]
    return {"passed": passed, "why": "every check holds" if passed else "failed: " + ", ".join(failed),
            "checks": checks, "tests": tests, "candidate_ece": ece, "settings": asdict(settings)}  # fmt: skip


def summary_markdown(task: str, candidate: str, served: str, decision: dict, promoted: bool) -> str:
    """The readable comparison report written beside gate.json."""
    lines = [f"# {task}: {candidate} against {served}", "",
             f"**Decision: {'promoted' if promoted else 'not promoted'}** ({decision['why']}).", "",
             "| check | passed | detail |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {c['check']} | {'yes' if c['passed'] else 'no'} | {c['detail']} |" for c in decision["checks"]]
    return "\n".join(lines) + "\n"
