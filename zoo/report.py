"""``report.html``: one self-contained page of a run — recipe, data, training curves, evaluation metrics, the tasks'
pictures and the worst examples — readable offline (pictures embedded as ``data:`` URIs, no script, no network).

Built from the run folder's files alone, so ``zoo report RUN_DIR`` rebuilds it for older or interrupted runs:
``recipe.txt`` / ``recipe.json``, ``data.json``, ``logs/`` (curves, redrawn here), ``evaluation.json`` (what the last
evaluation into this folder measured, on which split; ``metrics.json`` for runs written before it existed), the
evaluation pictures (``*.png``, per head in ``<head>/``) and ``worst.json``. Whatever is missing is said on the page.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
from pathlib import Path
from typing import Any

from zoo.curves import write_curves

__all__ = ["write_report", "evaluation_record", "REPORT_NAME"]

REPORT_NAME = "report.html"

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
.meta { color: #666; } .note { background: #fff7e0; border-left: 4px solid #e0a800; padding: 0.4em 0.8em; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { border: 1px solid #ddd; padding: 0.2em 0.6em; }
th { background: #f4f4f4; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: 0.9em; } img { max-width: 100%; border: 1px solid #eee; }
pre { background: #f8f8f8; padding: 0.8em; overflow-x: auto; font-size: 12px; } details { margin: 0.5em 0; }
"""

# evaluation pictures in the order they are shown, by file name (the rest follow alphabetically)
_ORDER = ("confusion_matrix", "pr_curves", "predictions_", "worst_")


def evaluation_record(*, checkpoint: str | Path, split: str, metrics: dict[str, float], heads: list[str],
                      members: list[str] | None = None) -> dict[str, Any]:
    """What ``evaluation.json`` holds: which checkpoint was evaluated on which split, its metrics, the head names."""
    return {"checkpoint": str(checkpoint), "split": split, "metrics": metrics, "heads": heads,
            "members": members or [], "written": datetime.datetime.now().isoformat(timespec="seconds")}


def _read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _image(path: Path, caption: str = "") -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    alt = html.escape(caption or path.stem)
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">{cap}</figure>'


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else html.escape(str(value))


def _heads(recipe: dict | None, evaluation: dict | None) -> list[str]:
    """Head names of a multi-head model ([""] for one head), from the evaluation record or the stored recipe."""
    if evaluation and evaluation.get("heads"):
        return list(evaluation["heads"])
    heads = ((recipe or {}).get("model") or {}).get("heads")
    return list(heads) if isinstance(heads, dict) and heads else [""]


def _metrics_tables(metrics: dict[str, float], heads: list[str]) -> str:
    """Per head: its summary metrics in one table, its per-class metrics (``<metric>/<class>``) in a class table."""
    parts = []
    for head in heads:
        prefix = f"{head}/" if head else ""
        own = {k[len(prefix):]: v for k, v in metrics.items() if k.startswith(prefix)} if head else \
            {k: v for k, v in metrics.items() if not any(k.startswith(f"{h}/") for h in heads if h)}
        summary = {k: v for k, v in own.items() if "/" not in k}
        per_class: dict[str, dict[str, float]] = {}
        for k, v in own.items():
            if "/" in k:
                metric, cls = k.split("/", 1)
                per_class.setdefault(cls, {})[metric] = v
        title = f"<h3>head {html.escape(head)}</h3>" if head else ""
        rows = "".join(f'<tr><th>{html.escape(k)}</th><td class="num" data-metric="{html.escape(prefix + k)}">'
                       f"{_number(v)}</td></tr>" for k, v in summary.items())
        block = f"{title}<table>{rows}</table>"
        if per_class:
            names = sorted({m for row in per_class.values() for m in row})
            head_row = "".join(f"<th>{html.escape(m)}</th>" for m in names)
            body = "".join(
                f"<tr><th>{html.escape(cls)}</th>" + "".join(
                    f'<td class="num" data-metric="{html.escape(f"{prefix}{m}/{cls}")}">{_number(row[m])}</td>'
                    if m in row else '<td class="num">absent</td>' for m in names) + "</tr>"
                for cls, row in per_class.items())
            block += (f"<details open><summary>per class ({len(per_class)})</summary>"
                      f"<table><tr><th>class</th>{head_row}</tr>{body}</table></details>")
        parts.append(block)
    return "".join(parts)


def _data_section(data: dict | None) -> str:
    if not data:
        return '<p class="note">No data.json in this folder: the run did not get past reading its data.</p>'
    parts = []
    sizes = data.get("sizes") or {}
    if sizes:
        parts.append("<table><tr>" + "".join(f"<th>{html.escape(s)}</th>" for s in sizes) + "</tr><tr>"
                     + "".join(f'<td class="num">{n}</td>' for n in sizes.values()) + "</tr></table>")
    counts = data.get("counts") or {}
    for key, classes in (data.get("classes") or {}).items():
        splits = [s for s in counts if key in (counts.get(s) or {})]
        if splits:
            header = "".join(f"<th>{html.escape(s)}</th>" for s in splits)
            rows = "".join(f"<tr><th>{html.escape(c)}</th>" + "".join(
                f'<td class="num">{counts[s][key].get(c, 0)}</td>' for s in splits) + "</tr>" for c in classes)
            parts.append(f"<details open><summary>{html.escape(key)}: {len(classes)} classes, samples per split"
                         f"</summary><table><tr><th>class</th>{header}</tr>{rows}</table></details>")
        elif classes:
            shown = ", ".join(html.escape(c) for c in list(classes)[:60])
            more = f" and {len(classes) - 60} more" if len(classes) > 60 else ""
            parts.append(f"<p>{html.escape(key)}: {len(classes)} classes: {shown}{more}</p>")
    skipped = data.get("skipped") or []
    if skipped:
        rows = "".join(f"<tr><td>{html.escape(str(p))}</td><td>{html.escape(str(r))}</td></tr>" for p, r in skipped[:200])
        more = f"<p>and {len(skipped) - 200} more, listed in data.json</p>" if len(skipped) > 200 else ""
        parts.append(f"<details><summary>{len(skipped)} input(s) skipped</summary><table><tr><th>input</th>"
                     f"<th>reason</th></tr>{rows}</table>{more}</details>")
    else:
        parts.append("<p>No input was skipped.</p>")
    return "".join(parts)


def _pictures(run: Path, heads: list[str], worst: list[dict]) -> str:
    notes = {entry["picture"]: entry for entry in worst}
    parts = []
    for head in heads:
        folder = run / head if head else run
        files = sorted(p for p in folder.glob("*.png") if not p.name.startswith("curves"))
        files.sort(key=lambda p: next((i for i, k in enumerate(_ORDER) if p.name.startswith(k)), len(_ORDER)))
        if not files:
            continue
        if head:
            parts.append(f"<h3>head {html.escape(head)}</h3>")
        for path in files:
            rel = str(path.relative_to(run))
            if rel in notes:
                entry = notes[rel]
                caption = (f"worst examples, {entry['group']}: the {len(entry['examples'])} worst of the split, "
                           f"worst first (positions in the split: "
                           f"{', '.join(str(e['position']) for e in entry['examples'])})")
            elif path.name.startswith("predictions_"):
                caption = f"the first images of the {path.stem.split('_', 1)[1]} split with predictions and truth"
            else:
                caption = path.stem.replace("_", " ")
            parts.append(_image(path, caption))
    return "".join(parts)


def write_report(run: str | Path, *, out: str | Path | None = None) -> Path:
    """Writes ``report.html`` (or ``out``) for run folder ``run``; returns its path. Redraws the curves first."""
    run = Path(run)
    if not run.is_dir():
        from zoo.errors import ZooError

        raise ZooError(f"{run}: no such folder (zoo report takes a run folder written by zoo train or zoo eval --out)")
    curves = write_curves(run) if (run / "logs").is_dir() else []
    recipe = _read_json(run / "recipe.json")
    evaluation = _read_json(run / "evaluation.json")
    if evaluation is None and (run / "metrics.json").is_file():  # runs written before evaluation.json
        metrics = _read_json(run / "metrics.json")
        evaluation = {"checkpoint": str(run / "best.ckpt"), "split": "test", "metrics": metrics or {}}
    heads = _heads(recipe, evaluation)
    worst = _read_json(run / "worst.json") or []
    name = (recipe or {}).get("name") or run.resolve().name
    from zoo import version

    sections = [f"<h1>{html.escape(name)}</h1><p class='meta'>run folder {html.escape(str(run.resolve()))} · "
                f"report written {datetime.datetime.now():%Y-%m-%d %H:%M} · zoo {html.escape(version())}</p>"]
    sections.append("<h2>Evaluation</h2>")
    if evaluation:
        members = evaluation.get("members") or []
        what = ", ".join([evaluation["checkpoint"], *members])
        sections.append(f"<p>{html.escape(evaluation['split'])} split metrics of {html.escape(what)}</p>")
        shown = evaluation.get("metrics") or {}
        sections.append(_metrics_tables(shown, heads))
        if any(v == -1 for v in shown.values()):
            sections.append("<p class='meta'>-1: not measured — pycocotools' value for a size range (small, medium, "
                            "large) with no true box of that size in the split.</p>")
    else:
        sections.append("<p class='note'>No evaluation yet: the run has not reached its test pass. "
                        f"<code>zoo eval {html.escape(str(run / 'last.ckpt'))} --out {html.escape(str(run))}</code> "
                        "evaluates the last checkpoint into this folder (then <code>zoo report</code> again).</p>")
    sections.append("<h2>Training curves</h2>")
    sections.append("".join(_image(p, p.stem.replace("_", " ")) for p in curves)
                    or "<p class='note'>No training logs in this folder.</p>")
    pictures = _pictures(run, heads, worst)
    sections.append("<h2>Pictures</h2>" + (pictures or "<p class='note'>No evaluation pictures in this folder.</p>"))
    data = _read_json(run / "data.json") or (evaluation or {}).get("data")
    sections.append("<h2>Data</h2>" + _data_section(data))
    listing = (run / "recipe.txt").read_text() if (run / "recipe.txt").is_file() else (evaluation or {}).get("recipe")
    sections.append("<h2>Recipe</h2>" + (f"<details><summary>the resolved recipe ({len(listing.splitlines())} "
                                          f"fields)</summary><pre>{html.escape(listing)}</pre></details>"
                                          if listing else "<p class='note'>No recipe.txt in this folder.</p>"))
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(name)} · zoo report"
            f"</title><style>{_CSS}</style></head><body>{''.join(sections)}</body></html>\n")
    path = Path(out) if out else run / REPORT_NAME
    path.write_text(page, encoding="utf-8")
    return path
