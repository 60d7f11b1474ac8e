"""Aggregation (normalized scores, ranks, summaries) and the markdown report."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .scoring import normalize, ranks
from .systems import NOTES

NOISY_SHARE = 0.10  # other processes' share of the CPU above which a timing is flagged


def finalize_group(records: list[dict[str, Any]], baseline: float, higher_is_better: bool) -> None:
    """Fill `normalized` and `rank` for the records of one (dataset, budget).

    A failed run is scored as the constant predictor.
    """
    scores = {r["system"]: (r["score"] if r["status"] == "ok" else baseline) for r in records}
    norm = normalize(scores, baseline, higher_is_better)
    rank = ranks(scores, higher_is_better)
    for record in records:
        record["scored_as"] = scores[record["system"]]
        record["normalized"] = norm[record["system"]]
        record["rank"] = rank[record["system"]]


def summarize(records: list[dict[str, Any]], systems: list[str]) -> dict[str, dict[str, Any]]:
    """Per-system mean normalized score, mean rank, failures, total wall time, max memory."""
    summary: dict[str, dict[str, Any]] = {}
    for system in systems:
        mine = [r for r in records if r["system"] == system]
        if not mine:
            continue
        summary[system] = {
            "n_datasets": len(mine),
            "mean_normalized": sum(r["normalized"] for r in mine) / len(mine),
            "mean_rank": sum(r["rank"] for r in mine) / len(mine),
            "failures": sum(r["status"] != "ok" for r in mine),
            "total_wall_s": sum(r["wall_s"] or 0.0 for r in mine),
            "max_peak_mem_mb": max((r["peak_mem_mb"] or 0.0) for r in mine),
        }
    return summary


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}" if abs(value) >= 100 else f"{value:.{digits}f}"


def _score_cell(record: dict[str, Any] | None, best: float | None) -> str:
    if record is None:
        return "–"
    if record["status"] != "ok":
        return f"FAIL ({record['failure_kind']}) · {record['normalized']:.2f}"
    text = _fmt(record["score"])
    if best is not None and record["score"] == best:
        text = f"**{text}**"
    return f"{text} · {record['normalized']:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def budget_section(
    budget: int, records: list[dict[str, Any]], datasets: dict[str, dict[str, Any]],
    systems: list[str], summary: dict[str, dict[str, Any]],
) -> list[str]:
    lines = [f"## Budget {budget} s", ""]
    lines.append("Cells: test score · normalized score (1 = best system, 0 = constant predictor). Best score in bold.")
    lines.append("")
    rows, cost_rows, failures = [], [], []
    for name, meta in datasets.items():
        mine = {r["system"]: r for r in records if r["dataset"] == name}
        if not mine:
            continue
        ok = [r["score"] for r in mine.values() if r["status"] == "ok"]
        best = (max(ok) if meta["higher_is_better"] else min(ok)) if ok else None
        arrow = "↑" if meta["higher_is_better"] else "↓"
        rows.append([name, f"{meta['metric']} {arrow}", _fmt(meta["constant_score"]),
                     *[_score_cell(mine.get(s), best) for s in systems]])
        cost_rows.append([name, *[_cost_cell(mine.get(s)) for s in systems]])
        failures += [f"- {name} / {r['system']}: {r['failure']}" for r in mine.values() if r["status"] != "ok"]
    lines += _table(["dataset", "metric", "constant", *systems], rows)
    lines += ["", "Summary:", ""]
    lines += _table(["", *systems], _summary_rows(summary, systems))
    lines += ["", "Wall time (s, fit and predict) / peak memory of the process tree (MB): the sum of "
              "RSS over its processes (pages forked processes share count once per process), and in "
              "brackets the sum of PSS (shared pages divided among their processes), where measured:",
              ""]
    lines += _table(["dataset", *systems], cost_rows)
    if failures:
        lines += ["", "Failures:", "", *failures]
    return lines + [""]


def _cost_cell(record: dict[str, Any] | None) -> str:
    if record is None:
        return "–"
    noisy = "*" if (record.get("other_cpu_frac") or 0.0) > NOISY_SHARE else ""
    pss = record.get("peak_pss_mb") or 0.0
    return f"{record['wall_s']:.1f} / {record['peak_mem_mb']:.0f}" + (f" ({pss:.0f})" if pss else "") + noisy


def _summary_rows(summary: dict[str, dict[str, Any]], systems: list[str]) -> list[list[str]]:
    def row(label: str, key: str, fmt: str) -> list[str]:
        return [label, *[format(summary[s][key], fmt) if s in summary else "–" for s in systems]]

    return [
        row("mean normalized score ↑", "mean_normalized", ".3f"),
        row("mean rank ↓", "mean_rank", ".2f"),
        row("failures", "failures", "d"),
        row("datasets", "n_datasets", "d"),
        row("total wall time (s)", "total_wall_s", ".0f"),
        row("max peak memory (MB)", "max_peak_mem_mb", ".0f"),
    ]


def _load_note(records: list[dict[str, Any]]) -> str:
    shares = [r["other_cpu_frac"] for r in records if r.get("other_cpu_frac") is not None]
    if not shares:
        return "not recorded"
    worst = max(shares)
    verdict = "timings marked * are noisy: other work shared the CPU" if worst > NOISY_SHARE else "the machine was quiet"
    return (f"CPU used by other processes during a run: at most {100 * worst:.0f}% of the machine "
            f"({verdict})")


def render(results: dict[str, Any]) -> str:
    systems: list[str] = results["systems"]
    lines = [f"# Peer benchmark: {results['name']}", ""]
    lines += [
        f"- Command: `{results['command']}`",
        f"- Date: {results['date']}",
        f"- Machine: {results['machine']['description']}",
        f"- Split: {results['split']['description']}",
        f"- Scores: {results['scoring']}",
        f"- Load: {_load_note(results['runs'])}",
    ]
    if results.get("compared_with"):
        lines.append("- Systems not run by this command are the runs of "
                     + ", ".join(f"`{Path(p).name}`" for p in results["compared_with"])
                     + " (same split and seed), rescored beside this run's")
    lines += [
        "",
    ]
    lines += _table(
        ["system", "version", "setup"],
        [[s, results["versions"].get(s, "?"), NOTES[s]] for s in systems],
    )
    lines.append("")
    for budget in results["budgets"]:
        key = str(budget)
        records = [r for r in results["runs"] if r["budget"] == budget]
        lines += budget_section(budget, records, results["datasets"], systems,
                                results["summary"].get(key, {}))
    return "\n".join(lines)
