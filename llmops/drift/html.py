"""The drift report as one self-contained HTML page: no scripts, no external files.

Summary first (verdict, windows, rates, the feature table), then per feature the reference and
current distributions drawn side by side on the same scale (inline SVG), then the prompt-text
evidence. Every value from the report is HTML-escaped: prompts are user text.
"""

from __future__ import annotations

from html import escape
from typing import Any

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;
max-width:1100px;padding:0 16px;color:#1f2328;background:#fff}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
h3{font-size:15px;margin:0 0 6px}
.muted{color:#59636e}.banner{padding:12px 16px;border-radius:8px;margin:12px 0;font-size:16px}
.drift{background:#ffebe9;border:1px solid #ff818266}
.ok{background:#dafbe1;border:1px solid #4ac26b66}
.na{background:#f6f8fa;border:1px solid #d0d7de}
table{border-collapse:collapse;width:100%;margin:6px 0}th,td{text-align:left;padding:5px 8px;
border-bottom:1px solid #eaeef2;vertical-align:top}th{background:#f6f8fa;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.tag{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}
.tag.drift{color:#a40e26}.tag.ok{color:#116329}.tag.na{color:#59636e}
.feature{border:1px solid #d0d7de;border-radius:8px;padding:12px 14px;margin:12px 0}
.pair{display:flex;gap:16px;flex-wrap:wrap}.pair figure{margin:0;flex:1;min-width:300px}
figcaption{font-size:12px;color:#59636e;margin-bottom:2px}
.legend span{display:inline-block;width:10px;height:10px;margin:0 4px 0 10px}
.terms{display:flex;gap:24px;flex-wrap:wrap}.terms>div{flex:1;min-width:300px}
blockquote{margin:6px 0;padding:6px 10px;background:#f6f8fa;border-left:3px solid #8c959f}
"""
_REF, _CUR = "#8c959f", "#cf222e"
_W, _H = 460, 150


def render(report: dict[str, Any]) -> str:
    """The page for one report."""
    summary = report["summary"]
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>Drift report {escape(str(report['report_id']))}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Drift report {escape(str(report['report_id']))}</h1>",
        f"<div class=muted>generated {escape(str(report['generated_at']))} · gateway "
        f"{escape(str(report['gateway_version']))}</div>",
        _banner(summary),
        _windows(report),
        _rates(report["rates"]),
        _retraining(report.get("retraining") or {}),
        "<h2>Features</h2>",
        _feature_table(report["features"]),
    ]
    for feature in report["features"]:
        if feature["kind"] != "text":
            parts.append(_feature_section(feature))
    parts.append(_text_section(report))
    parts.append("</body></html>")
    return "\n".join(parts)


def _banner(summary: dict[str, Any]) -> str:
    verdict = summary["verdict"]
    css = {"drift": "drift", "no drift": "ok"}.get(verdict, "na")
    if verdict == "drift":
        text = (
            f"<b>Traffic drifted.</b> {summary['features_drifted']} of "
            f"{summary['features_tested']} features drifted (share "
            f"{_fmt(summary['drift_share'])} ≥ {_fmt(summary['share_threshold'])}): "
            + escape(", ".join(summary["drifted"]))
        )
    elif verdict == "no drift":
        text = (
            f"<b>No dataset drift.</b> {summary['features_drifted']} of "
            f"{summary['features_tested']} features drifted (threshold share "
            f"{_fmt(summary['share_threshold'])})"
            + (": " + escape(", ".join(summary["drifted"])) if summary["drifted"] else ".")
        )
    else:
        text = "<b>Not enough data</b> in one of the windows to test any feature."
    missing = summary["not_enough_data"]
    if missing and verdict != "not enough data":
        text += f"<br><span class=muted>Not enough data: {escape(', '.join(missing))}</span>"
    return f"<div class='banner {css}'>{text}</div>"


def _windows(report: dict[str, Any]) -> str:
    rows = []
    for label in ("reference", "current"):
        window = report["windows"][label]
        problems = window["corrupt_lines"] + window["unknown_schema"]
        note = (
            f"{window['corrupt_lines']} corrupt lines, {window['unknown_schema']} of an "
            f"unknown schema skipped"
            if problems
            else "no bad lines"
        )
        kind = f" ({window['kind']})" if label == "reference" else ""
        versions = window.get("served_versions") or {}
        served = ", ".join(f"{name}: {count}" for name, count in versions.items()) or "-"
        rows.append(
            f"<tr><td>{label}{escape(kind)}</td><td>{escape(window['start'])}</td>"
            f"<td>{escape(window['end'])}</td><td class=num>{window['records']}</td>"
            f"<td>{escape(served)}</td><td>{escape(note)}</td></tr>"
        )
    return (
        "<h2>Windows</h2><table><tr><th>Window</th><th>Start (UTC)</th><th>End (UTC)</th>"
        "<th>Calls</th><th>Served by registry version</th><th>Read</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _rates(rates: dict[str, Any]) -> str:
    labels = {
        "error_rate": "Error rate",
        "content_filter_rate": "Content-filter rate",
        "latency_p95_ms": "Latency p95 (ms)",
    }
    rows = "".join(
        f"<tr><td>{label}</td><td class=num>{_fmt(rates[key]['reference'])}</td>"
        f"<td class=num>{_fmt(rates[key]['current'])}</td></tr>"
        for key, label in labels.items()
    )
    return (
        "<h2>Signals</h2><table><tr><th>Signal</th><th>Reference</th><th>Current</th></tr>"
        + rows
        + "</table>"
    )


def _retraining(state: dict[str, Any]) -> str:
    if state.get("request"):
        text = f"Retraining requested: <code>retrain-requests/{escape(state['request'])}</code>"
    elif state.get("skipped"):
        text = f"Retraining not requested: {escape(state['skipped'])}"
    elif state.get("consecutive"):
        text = (
            f"Drift in {state['consecutive']} consecutive window(s); retraining is requested "
            f"after {state['after']}."
        )
    else:
        return ""
    return f"<p>{text}</p>"


def _feature_table(features: list[dict[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td><a href='#f-{escape(f['name'])}'>{escape(f['name'])}</a></td>"
        f"<td>{escape(f['kind'])}</td><td>{escape(f['method'] or '–')}</td>"
        f"<td class=num>{_fmt(f['score'])}</td><td>{_rule(f)}</td>"
        f"<td class=num>{f['samples']['reference']}</td>"
        f"<td class=num>{f['samples']['current']}</td>"
        f"<td>{_tag(f['verdict'])}</td></tr>"
        for f in features
    )
    return (
        "<table><tr><th>Feature</th><th>Kind</th><th>Method</th><th>Score</th><th>Drift when</th>"
        "<th>Reference n</th><th>Current n</th><th>Verdict</th></tr>" + rows + "</table>"
    )


def _rule(feature: dict[str, Any]) -> str:
    if feature["threshold"] is None:
        return "–"
    sign = (
        "<" if feature["score_kind"] == "p_value" else ("≥" if feature["kind"] != "text" else ">")
    )
    return f"{escape(feature['score_kind'])} {sign} {_fmt(feature['threshold'])}"


def _tag(verdict: str) -> str:
    css = {"drift": "drift", "no drift": "ok"}.get(verdict, "na")
    return f"<span class='tag {css}'>{escape(verdict)}</span>"


def _feature_section(feature: dict[str, Any]) -> str:
    name = escape(feature["name"])
    head = (
        f"<div class=feature id='f-{name}'><h3>{name} {_tag(feature['verdict'])}</h3>"
        f"<div class=muted>{escape(feature['method'] or 'not tested')}"
        + (f", score {_fmt(feature['score'])}" if feature["score"] is not None else "")
        + "</div>"
    )
    distribution = feature.get("distribution")
    if not distribution:
        return head + "<p class=muted>No values in either window.</p></div>"
    if feature["kind"] == "numeric":
        labels = _bin_labels(distribution["edges"])
        stats = feature.get("stats", {})
        captions = [
            f"{side}: mean {_fmt(stats.get(side, {}).get('mean'))}, p50 "
            f"{_fmt(stats.get(side, {}).get('p50'))}, p95 {_fmt(stats.get(side, {}).get('p95'))}"
            for side in ("reference", "current")
        ]
    else:
        labels = [str(v) for v in distribution["values"]]
        captions = ["reference", "current"]
    top = max([*distribution["reference"], *distribution["current"], 0.0001])
    charts = "".join(
        f"<figure><figcaption>{escape(caption)}</figcaption>"
        f"{_bars(distribution[side], labels, top, color)}</figure>"
        for side, caption, color in zip(
            ("reference", "current"), captions, (_REF, _CUR), strict=True
        )
    )
    return head + f"<div class=pair>{charts}</div></div>"


def _bars(shares: list[float], labels: list[str], top: float, color: str) -> str:
    """A bar chart of shares as inline SVG; each bar's tooltip names its bin and share."""
    count = max(len(shares), 1)
    gap = 2
    width = (_W - 10) / count
    bars = []
    for i, (share, label) in enumerate(zip(shares, labels, strict=False)):
        height = (_H - 30) * share / top
        x = 5 + i * width
        bars.append(
            f"<rect x='{x:.1f}' y='{_H - 20 - height:.1f}' width='{max(width - gap, 1):.1f}' "
            f"height='{height:.1f}' fill='{color}'><title>{escape(label)}: "
            f"{share * 100:.1f}%</title></rect>"
        )
    first, last = (escape(labels[0][:28]), escape(labels[-1][:28])) if labels else ("", "")
    return (
        f"<svg viewBox='0 0 {_W} {_H}' width='100%' role=img aria-label='distribution'>"
        f"<line x1='5' y1='{_H - 20}' x2='{_W - 5}' y2='{_H - 20}' stroke='#d0d7de'/>"
        + "".join(bars)
        + f"<text x='5' y='{_H - 5}' font-size='11' fill='#59636e'>{first}</text>"
        f"<text x='{_W - 5}' y='{_H - 5}' font-size='11' fill='#59636e' "
        f"text-anchor='end'>{last}</text>"
        f"<text x='5' y='12' font-size='11' fill='#59636e'>max {top * 100:.1f}%</text></svg>"
    )


def _bin_labels(edges: list[float]) -> list[str]:
    return [f"{_fmt(edges[i])}–{_fmt(edges[i + 1])}" for i in range(len(edges) - 1)]


def _text_section(report: dict[str, Any]) -> str:
    feature = next((f for f in report["features"] if f["kind"] == "text"), None)
    evidence = report.get("text_evidence")
    head = "<h2 id='f-prompt_text'>What users ask about (prompt text)</h2>"
    if feature is None or evidence is None:
        return head + "<p class=muted>Not enough prompts in one of the windows.</p>"
    verdict = (
        f"<p>{_tag(feature['verdict'])} A classifier told current prompts from reference ones "
        f"with ROC AUC {_fmt(feature['score'])} (drift above {_fmt(feature['threshold'])}; 0.5 "
        f"is chance), on {evidence['sampled']['reference']} reference and "
        f"{evidence['sampled']['current']} current prompts.</p>"
    )
    columns = "".join(
        f"<div><h3>{title}</h3>{_term_bars(evidence[key], color)}</div>"
        for key, title, color in (
            ("current_terms", "Words typical of the current window", _CUR),
            ("reference_terms", "Words typical of the reference window", _REF),
        )
    )
    examples = "".join(
        f"<blockquote>{escape(text)}</blockquote>" for text in evidence["current_examples"]
    )
    return (
        head
        + verdict
        + f"<div class=terms>{columns}</div>"
        + ("<h3>Current prompts most unlike the reference</h3>" + examples if examples else "")
    )


def _term_bars(terms: list[dict[str, Any]], color: str) -> str:
    if not terms:
        return "<p class=muted>none</p>"
    top = max(t["weight"] for t in terms) or 1.0
    rows = "".join(
        f"<tr><td>{escape(t['term'])}</td><td><svg width='160' height='10'><rect width="
        f"'{160 * t['weight'] / top:.0f}' height='10' fill='{color}'/></svg></td>"
        f"<td class=num>{_fmt(t['weight'])}</td></tr>"
        for t in terms
    )
    return f"<table>{rows}</table>"


def _fmt(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if value != 0 and (abs(value) < 0.001 or abs(value) >= 1e6):
            return f"{value:.2e}"
        return f"{value:,.4g}" if abs(value) >= 1000 else f"{value:.3g}"
    return escape(str(value))
