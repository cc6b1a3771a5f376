"""A model card per version, generated from its manifest (Markdown); the fixed texts live in qdup/resources/card.json.

The card reads what the manifest holds and says "not recorded" for what an older version lacks.
Beyond `qdup.registry.publish.lineage_manifest`'s keys it uses, when present:
- manifest["metrics"]["intervals"]: `qdup.evaluation.bootstrap.bootstrap_intervals` of the model on test (its
  "method" and "groups" say whether whole question clusters were resampled);
- manifest["metrics"]["baseline"]: the lexical baseline block (`qdup.evaluation.baseline.baseline_metrics`,
  or the same flattened like manifest["metrics"]["test"]), with its own optional "intervals";
- manifest["metrics"]["lift_over_baseline"]: `paired_difference` model - baseline (see `qdup.evaluation.trust`);
- manifest["metrics"]["reranker"]: `qdup.stages.rerank.summary` (reranker, encoder, baseline, differences);
- manifest["drift"]: `qdup.data.drift.DriftReport.as_dict()`;
- manifest["served"]: `qdup.registry.publish.served_block` (what decides and why, its figures, the default search);
- manifest["compared_against"]: the gate stage's record (`qdup.registry.judge.judge`, with its "comparisons" and
  "baseline"; older versions: "paired_difference");
- manifest["dataset"]["fetched_at"].
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

from qdup.evaluation.bootstrap import format_paired_difference
from qdup.registry.feedback import feedback_card_lines

METRIC_ROWS = (("roc_auc", "ROC AUC"), ("pr_auc", "PR AUC (average precision)"), ("accuracy", "accuracy"),
               ("f1", "F1"), ("precision", "precision"), ("recall", "recall"))
NOT_RECORDED = "not recorded for this version"


@lru_cache(maxsize=1)
def card_texts() -> dict[str, Any]:
    with resources.files("qdup").joinpath("resources", "card.json").open(encoding="utf-8") as f:
        return json.load(f)


class _Values(dict):
    """str.format_map values where a missing one reads "unknown" (older manifests lack some)."""

    def __missing__(self, key: str) -> str:
        return "unknown"


def _f(v: Any, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _cell(v: Any) -> str:
    return _f(v).replace("|", "\\|").replace("\n", " ")


def flat_test_metrics(block: dict[str, Any] | None) -> dict[str, Any]:
    """Test metrics as {roc_auc, pr_auc, accuracy, precision, recall, f1}, from the flat manifest shape
    or the metrics.json shape ({"test": {"ranking": ..., "at_threshold": ...}})."""
    if not block:
        return {}
    test = block.get("test", block)
    if "ranking" in test or "at_threshold" in test:
        return {**(test.get("ranking") or {}), **(test.get("at_threshold") or {})}
    return dict(test)


def _interval(intervals: dict[str, Any] | None, metric: str) -> str:
    if not intervals:
        return "—"
    m = (intervals.get("metrics") or {}).get(metric)
    if not m or m.get("low") is None or m.get("high") is None:
        return "—"
    return f"{m['low']:.4f} – {m['high']:.4f}"


def _values(manifest: dict[str, Any]) -> _Values:
    params = manifest.get("parameters") or {}
    model = params.get("model") or {}
    train = params.get("train") or {}
    intervals = (manifest.get("metrics") or {}).get("intervals") or {}
    vocab = manifest.get("vocabulary") or {}
    v = _Values()
    if "max_length" in model:
        v["max_length"] = model["max_length"]
    if "lstm_units" in model:
        v["lstm_units"] = model["lstm_units"]
    if "bidirectional" in model:
        v["lstm"] = "bidirectional" if model["bidirectional"] else "unidirectional"
    if "margin" in train:
        v["margin"] = train["margin"]
    v["subwords"] = " plus hashed character n-gram embeddings of each word (fastText style)" if model.get("subwords") else ""
    size = f"{vocab['size']:,}" if vocab.get("size") is not None else "unknown"
    v["oov_limitation"] = (
        f"Words not in the training vocabulary ({size} tokens) share one out-of-vocabulary word id, but sub-words are on: every word "
        "also gets the embeddings of its character n-grams, so misspellings, rare words and new names are NOT invisible "
        "to the model (a misspelled word lands near its spelling); they are scored less reliably than words seen in training."
        if model.get("subwords") else
        f"Words not in the training vocabulary ({size} tokens) all map to one unknown token: new names, products and "
        "misspellings are invisible to the model.")
    served = manifest.get("served") or {}
    if served.get("decided_by") == "reranker":
        v["decision_rule"] = (f"The pair reranker decides: a pair is predicted duplicate iff the reranker's score (a probability) "
                              f">= its threshold {_f(served.get('threshold'))}; the encoder cosine is reported beside it.")
    else:
        v["decision_rule"] = (f"The encoder decides: a pair is predicted duplicate iff its cosine >= the threshold "
                              f"{_f(served.get('threshold', (manifest.get('threshold') or {}).get('value')))}.")
    if train.get("loss") == "softmax":
        v["loss"] = f"a symmetric in-batch softmax loss (multiple-negatives ranking, scale {train.get('scale')})"
    else:
        v["loss"] = f"a triplet loss (margin {train.get('margin', 'unknown')})"
    hard = train.get("hard_negatives") or 0
    v["negatives"] = (f"; {hard} labelled non-duplicates per duplicate pair join each batch, in a CoSENT ranking term"
                      if hard > 0 else "")
    v["pretrain"] = ("; pre-trained SimCSE-style on the train region's questions" if (params.get("pretrain") or {}).get("enabled") else "")
    if vocab.get("size") is not None:
        v["vocabulary_size"] = f"{vocab['size']:,}"
    share = (manifest.get("validation") or {}).get("duplicate_share")
    if share is not None:
        v["duplicate_share"] = f"{share:.1%}"
    if intervals:
        v["level"] = f"{intervals.get('level', 0.95):.0%}"
        v["resamples"] = f"{intervals.get('resamples', 0):,}"
        v["seed"] = intervals.get("seed")
        v["intervals_method"] = intervals.get("method") or "percentile bootstrap over test pairs (threshold fixed)"
        groups = intervals.get("groups")
        v["groups_text"] = f"; {groups:,} question clusters in {intervals.get('n', 0):,} test pairs" if groups else ""
    return v


def search_name(search: dict[str, Any] | None) -> str | None:
    """A default search method in words: 'hybrid (weighted, dense weight 0.3)'."""
    if not search:
        return None
    method, hybrid = search.get("method"), search.get("hybrid") or {}
    if method in ("hybrid", "reranked") and hybrid:
        form = hybrid.get("method")
        return f"{method} ({form}, dense weight {hybrid.get('weight')})" if form == "weighted" else f"{method} ({form})"
    return str(method)


def _served(manifest: dict[str, Any]) -> list[str]:
    """What this version serves, first: the deciding scorer, its threshold and test figures, the others named beside it."""
    served = manifest.get("served")
    lines = ["## What serves", ""]
    if not served:
        return lines + [f"What serves {NOT_RECORDED}.", ""]
    decider = "pair reranker" if served["decided_by"] == "reranker" else "encoder"
    lines.append(f"**Duplicate decision: the {decider}** (score >= {_f(served.get('threshold'))}). Why: {served.get('why')}.")
    lines += ["", "| scorer | role | threshold | test ROC AUC | test accuracy |", "|---|---|---:|---:|---:|"]
    rows = [(decider, "decides", served.get("test") or {})]
    if served["decided_by"] == "reranker":
        rows.append(("encoder", "beside it (its cosine is reported as similarity)", served.get("encoder") or {}))
    elif served.get("reranker"):
        rows.append(("pair reranker", "not serving decisions (re-orders reranked search only)", served["reranker"]))
    if served.get("baseline"):
        b = served["baseline"]
        rows.append((f"lexical baseline ({b.get('name')})", "reference", b))
    lines += [f"| {name} | {role} | {_f(m.get('threshold'))} | {_f(m.get('roc_auc'))} | {_f(m.get('accuracy'))} |"
              for name, role, m in rows]
    if served.get("search"):
        by = served["search"].get("reranked_by")
        lines += ["", f"**Search: {search_name(served['search'])}** by default, chosen on {served['search'].get('chosen_on')}"
                  + (f"; re-ordered by {by}." if by else ".")]
    return lines + [""]


def _intended_use(texts: dict[str, Any], v: _Values) -> list[str]:
    lines = ["## Intended use", ""]
    lines += [f"- {t.format_map(v)}" for t in texts["intended_use"]]
    lines += ["", f"**Label convention.** {texts['label_convention'].format_map(v)}", ""]
    return lines


def _data(manifest: dict[str, Any]) -> list[str]:
    ds = manifest.get("dataset") or {}
    val = manifest.get("validation") or {}
    lines = ["## Data", ""]
    rows = [
        ("source", ds.get("source")),
        ("origin", "generated by `qdup demo-data`" if ds.get("generated") else None),
        ("sha256", f"`{ds['sha256']}`" if ds.get("sha256") else None),
        ("bytes", ds.get("bytes")),
        ("rows (validated)", val.get("rows")),
        ("duplicate share", f"{val['duplicate_share']:.2%}" if val.get("duplicate_share") is not None else None),
        ("data contract", f"{val.get('suite')} (passed)" if val.get("suite") else None),
        ("fetched", ds.get("fetched_at")),
        ("version created", manifest.get("created")),
    ]
    lines += ["| | |", "|---|---|"] + [f"| {k} | {_cell(x)} |" for k, x in rows if x is not None]
    splits = {k: s for k, s in (manifest.get("splits") or {}).items() if not k.startswith("_")}
    if splits:
        lines += ["", "| split | rows | duplicates | content sha256 |", "|---|---:|---:|---|"]
        for name, s in splits.items():
            lines.append(f"| {name} | {_f(s.get('rows'))} | {_f(s.get('duplicates'))} | `{s.get('content_sha256', '—')}` |")
        plan = (manifest.get("splits") or {}).get("_plan")
        if plan:
            how = (
                f"whole question-graph components drawn at random (seeded): {_f(plan.get('n_train'))} rows for training, "
                f"{_f(plan.get('n_test'))} for test, which shares no question with training"
                if plan.get("mode") == "question_disjoint"
                else f"the first {_f(plan.get('n_train'))} for training, the next {_f(plan.get('n_test'))} for test"
            )
            text = (
                f"Split of {_f(plan.get('n_rows'))} rows ({plan.get('mode', 'positional')}): {how}. The training rows are "
                f"cut into three regions: train (rows before {_f(plan.get('val_start_row'))}: duplicates are `train`, "
                f"non-duplicates `negatives`), val (duplicates up to row {_f(plan.get('calibration_start_row'))}: early "
                f"stopping and the learning-rate schedule) and calibration (every pair from there on: the threshold and the "
                f"promotion gate). Test is reported only; {_f(plan.get('test_questions_seen'))} of its questions also appear "
                f"in another split."
            )
            lines += ["", text]
    return lines + [""]


def _model(manifest: dict[str, Any], texts: dict[str, Any], v: _Values) -> list[str]:
    m = manifest.get("model") or {}
    params = manifest.get("parameters") or {}
    lines = ["## Model and parameters", "", texts["model_description"].format_map(v), ""]
    facts = [
        ("encoder sha256", f"`{m['encoder_sha256']}`" if m.get("encoder_sha256") else None),
        ("best epoch", m.get("best_epoch")),
        ("epochs run", m.get("epochs_run")),
        ("best val_loss", m.get("best_val_loss")),
        ("seed", params.get("seed")),
    ]
    lines += ["| | |", "|---|---|"] + [f"| {k} | {_cell(x)} |" for k, x in facts if x is not None]
    for section in ("vocab", "model", "train"):
        values = params.get(section)
        if isinstance(values, dict) and values:
            lines += ["", f"`{section}`: " + ", ".join(f"{k}={json.dumps(x)}" for k, x in sorted(values.items()))]
    return lines + [""]


def _metrics(manifest: dict[str, Any], texts: dict[str, Any], v: _Values) -> list[str]:
    metrics = manifest.get("metrics") or {}
    model = flat_test_metrics(metrics)
    lines = ["## Metrics (test split)", ""]
    if not model:
        return lines + [f"Metrics {NOT_RECORDED}.", ""]
    intervals = metrics.get("intervals")
    baseline = metrics.get("baseline")
    base = flat_test_metrics(baseline)
    b_intervals = (baseline or {}).get("intervals")
    level = v["level"] if intervals else "95%"
    head = f"| metric | model | model {level} interval |"
    rule = "|---|---:|---:|"
    if base:
        head += f" lexical baseline | baseline {level} interval | lift |"
        rule += "---:|---:|---:|"
    lines += [head, rule]
    for key, label in METRIC_ROWS:
        if key not in model:
            continue
        row = f"| {label} | {_f(model.get(key))} | {_interval(intervals, key)} |"
        if base:
            lift = model[key] - base[key] if model.get(key) is not None and base.get(key) is not None else None
            row += f" {_f(base.get(key))} | {_interval(b_intervals, key)} | {'—' if lift is None else f'{lift:+.4f}'} |"
        lines.append(row)
    lines.append("")
    if intervals:
        lines.append(texts["intervals_description"].format_map(v))
    else:
        lines.append(f"Intervals {NOT_RECORDED}.")
    if base:
        lines.append(texts["baseline_description"].format_map(v) + _baseline_params(baseline))
    else:
        lines.append(f"Lexical baseline {NOT_RECORDED}.")
    if metrics.get("lift_over_baseline"):
        lift = format_paired_difference(metrics["lift_over_baseline"], a="model", b="lexical baseline")
        lines.append(f"Paired on the same resamples: {lift}.")
    lines.append(texts["selection_description"])
    cal = metrics.get("calibration") or {}
    if cal.get("roc_auc") is not None:
        extra = "".join(f", {label} {_f(cal[key])}" for key, label in (("accuracy", "accuracy"), ("f1", "F1")) if cal.get(key) is not None)
        lines.append(f"On the calibration split (the selection split): ROC AUC {_f(cal.get('roc_auc'))}, "
                     f"PR AUC {_f(cal.get('pr_auc'))}{extra}.")
    gate = manifest.get("compared_against") or {}
    for comparison in (gate.get("comparisons") or {}).values():
        lines.append(f"- Gate: {comparison['text']}.")
    if gate.get("paired_difference"):
        pd_ = gate["paired_difference"]
        on = f" on {gate['split']}" if gate.get("split") else ""
        lines.append(f"Against production {gate.get('version')}{on}: {pd_.get('text') or format_paired_difference(pd_)}.")
    return lines + [""]


RERANK_SCORERS = (("reranker", "pair reranker"), ("encoder", "encoder alone"), ("baseline", "lexical baseline"))


def _reranker(manifest: dict[str, Any], texts: dict[str, Any], v: _Values) -> list[str]:
    """Reranker, encoder alone and lexical baseline side by side on test, with intervals and the paired differences."""
    r = (manifest.get("metrics") or {}).get("reranker")
    if not r:
        return []
    level = f"{(r['reranker'].get('intervals') or {}).get('level', 0.95):.0%}"
    lines = ["## Pair reranker, encoder and lexical baseline (test split)", "",
             "| metric | " + " | ".join(f"{label} | {level} interval" for _, label in RERANK_SCORERS) + " |",
             "|---|" + "---:|---:|" * len(RERANK_SCORERS)]
    for key, label in METRIC_ROWS[:4]:
        cells = [f"{_f(r[name].get(key))} | {_interval(r[name].get('intervals'), key)}" for name, _ in RERANK_SCORERS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| threshold (from calibration) | " + " | ".join(f"{_f(r[n].get('threshold'))} | —" for n, _ in RERANK_SCORERS) + " |")
    lines += ["", texts["reranker_description"].format_map(v)]
    for key, diff in (r.get("differences") or {}).items():
        other = dict(RERANK_SCORERS).get(key.removeprefix("reranker_minus_"), key)
        lines.append(f"- Paired on the same resamples: {format_paired_difference(diff, a='pair reranker', b=other)}.")
    return lines + [""]


def _baseline_params(block: dict[str, Any] | None) -> str:
    p = (block or {}).get("params") or {}
    if not p:
        return ""
    parts = [f"{k}={json.dumps(p[k])}" for k in ("analyzer", "ngram_range", "min_df", "sublinear_tf", "features") if k in p]
    return " (" + ", ".join(parts) + ")" if parts else ""


def _threshold(manifest: dict[str, Any], texts: dict[str, Any]) -> list[str]:
    t = manifest.get("threshold") or {}
    lines = ["## Threshold", ""]
    if not t:
        return lines + [f"Threshold {NOT_RECORDED}.", ""]
    lines.append(
        f"**{_f(t.get('value'))}**, chosen on the {t.get('chosen_on', 'calibration')} split to maximise "
        f"{t.get('objective', 'accuracy')} (calibration accuracy {_f(t.get('calibration_accuracy'))})."
    )
    lines += ["", texts["threshold_rule"]]
    if t.get("f1_threshold") is not None:
        lines.append(f"The threshold that would maximise calibration F1 is {_f(t['f1_threshold'])} (F1 {_f(t.get('calibration_f1'))}).")
    ref = ((manifest.get("metrics") or {}).get("test") or {}).get("at_reference_threshold")
    if t.get("reference") is not None and ref:
        lines.append(f"At the fixed reference threshold {_f(t['reference'], 2)}: test accuracy {_f(ref.get('accuracy'))}, "
                     f"F1 {_f(ref.get('f1'))}.")
    base_t = ((manifest.get("metrics") or {}).get("baseline") or {}).get("threshold")
    if isinstance(base_t, dict) and base_t.get("value") is not None:
        lines.append(f"The lexical baseline's own threshold, chosen the same way: {_f(base_t['value'])}.")
    return lines + [""]


def _drift(manifest: dict[str, Any]) -> list[str]:
    d = manifest.get("drift")
    lines = ["## Drift against production", ""]
    if not d:
        return lines + [f"Drift {NOT_RECORDED}.", ""]
    against = f" against {d['production_version']}" if d.get("production_version") else ""
    lines.append(f"Status{against}: **{d.get('status', 'unknown')}** (mode {d.get('mode', 'unknown')}). {d.get('message', '')}".rstrip())
    for f in d.get("failing") or []:
        lines.append(f"- {f}")
    return lines + [""]


def _generated(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """What `qdup demo-data` recorded about the version's data set, when it generated it."""
    return (manifest.get("dataset") or {}).get("generated") or None


def _generated_notice(manifest: dict[str, Any], texts: dict[str, Any]) -> list[str]:
    generated = _generated(manifest)
    if not generated:
        return []
    return [texts["generated_notice"].format(rows=_f(generated.get("rows")), seed=generated.get("seed", "?")), ""]


def _limitations(manifest: dict[str, Any], texts: dict[str, Any], v: _Values) -> list[str]:
    origin = texts["data_origin"]["generated" if _generated(manifest) else "release"]
    return ["## Known limitations", "", f"- {origin}"] + [f"- {t.format_map(v)}" for t in texts["limitations"]] + [""]


def _lineage(manifest: dict[str, Any]) -> list[str]:
    ds = manifest.get("dataset") or {}
    vocab = manifest.get("vocabulary") or {}
    model = manifest.get("model") or {}
    code = manifest.get("code") or {}
    prefect = manifest.get("prefect") or {}
    libs = manifest.get("libraries") or {}
    gate = manifest.get("compared_against") or {}
    lines = ["## Lineage", ""]
    chain = [
        ("dataset", ds.get("sha256")),
        ("vocabulary", vocab.get("sha256")),
        ("encoder", model.get("encoder_sha256")),
    ]
    lines += [f"- {k}: `{x}`" for k, x in chain if x]
    if code:
        dirty = " (uncommitted changes)" if code.get("git_dirty") else ""
        lines.append(f"- code: qdup {code.get('version', '?')}, commit `{code.get('git_commit') or '-'}`{dirty}")
    if libs:
        lines.append("- libraries: " + ", ".join(f"{k} {x}" for k, x in sorted(libs.items())))
    if prefect:
        lines.append(f"- Prefect flow run: {prefect.get('flow_run_name', '-')} ({prefect.get('flow_run_id', '-')})")
    if gate:
        lines.append(f"- promotion gate: {'promoted' if gate.get('promote') else 'not promoted'}: {gate.get('reason', '')}")
        if gate.get("baseline"):
            lines.append(f"- baseline requirement: {gate['baseline'].get('reason', '')}")
    if manifest.get("aliases"):
        lines.append("- aliases: " + ", ".join(manifest["aliases"]))
    return lines + [""]


def model_card(manifest: dict[str, Any]) -> str:
    """The Markdown model card of a version's manifest (before or after publishing: id/created/files are optional)."""
    texts = card_texts()
    v = _values(manifest)
    title = texts["title"] + (f" — version {manifest['id']}" if manifest.get("id") else "")
    lines = [f"# {title}", ""]
    lines += _generated_notice(manifest, texts)
    lines += _served(manifest)
    lines += _intended_use(texts, v)
    lines += _data(manifest)
    lines += feedback_card_lines(manifest)
    lines += _model(manifest, texts, v)
    lines += _metrics(manifest, texts, v)
    lines += _reranker(manifest, texts, v)
    lines += _threshold(manifest, texts)
    lines += _drift(manifest)
    lines += _limitations(manifest, texts, v)
    lines += _lineage(manifest)
    return "\n".join(lines).rstrip() + "\n"
