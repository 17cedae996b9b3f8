"""`smallfleet report`: the facts and plots rendered into one self-contained HTML page
(Jinja2 template in `templates/`, every image inline, no script, nothing fetched)."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from smallfleet.guarantee import METHOD, Guarantee
from smallfleet.report import plots
from smallfleet.report.facts import FleetFacts

TEMPLATES = Path(__file__).parent / "templates"


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]),
                      trim_blocks=True, lstrip_blocks=True)  # fmt: skip
    env.filters["pct"] = lambda v, digits=1: "-" if v is None else f"{100 * v:.{digits}f}%"
    env.filters["usd"] = lambda v: "-" if v is None else (f"${v:,.2f}" if abs(v) >= 1 else f"${v:.6f}")
    env.filters["num"] = lambda v, digits=3: "-" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else v)
    return env


def render(facts: FleetFacts) -> str:
    """The report page for `facts`."""
    sections = []
    for task in facts.tasks:
        figures = [("Risk-coverage", plots.risk_coverage(task)), ("Reliability", plots.reliability(task)),
                   ("Cost vs quality", plots.cost_quality(task))]  # fmt: skip
        if task.novelty:
            figures.append(("Novelty", plots.novelty(task)))
        if task.series:
            figures.append(("Traffic and spend", plots.traffic(task, facts.bucket)))
        if task.live:
            figures.append(("Live quality", plots.live(task)))
        promise = Guarantee(**task.guarantee).describe() if task.guarantee else "no threshold stored"
        sections.append({"task": task, "figures": figures, "promise": promise})
    spend = plots.fleet_spend(facts) if facts.totals else None
    alerts = [t.name for t in facts.tasks if t.live and t.live["alert"]]
    return _environment().get_template("report.html.j2").render(
        facts=facts, sections=sections, spend=spend, alerts=alerts, method=METHOD,
        supported=sum(bool(t.guarantee.get("supported")) for t in facts.tasks),
    )  # fmt: skip


def write_report(facts: FleetFacts, out: Path) -> Path:
    """Render and write the page (whole or not at all)."""
    html = render(facts)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out)
    return out
