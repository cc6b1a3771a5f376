"""The quality benchmark's page (bench.quality): every configuration's figures side by side, the configuration chosen on
selection figures alone, and each one's test ROC-AUC against the reference's (paired)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bench.quality_figures import PROTOCOLS, REFERENCE_LABEL, load_protocol, pair_figures, pair_groups
from bench.shared_data import SHARED


def _fig(f: dict[str, Any] | None, signed: bool = False) -> str:
    if not f:
        return "—"
    fmt = "{:+.4f}" if signed else "{:.4f}"
    return f"{fmt.format(f['estimate'])} ({fmt.format(f['low'])} – {fmt.format(f['high'])})"


def test_frame(proto: dict[str, Any], name: str) -> pd.DataFrame:
    """The test pairs of a protocol, in the pipeline's test-split order: in both, the sample's test rows."""
    p = proto["sample"] if name == "sample" else proto["larger"]
    n_train = p["n_train"] if name == "sample" else p["sample_n_train"]
    n_test = p["n_test"] if name == "sample" else p["sample_n_test"]
    sample = pd.read_csv(SHARED / "data" / proto["sample"]["file"], sep="\t", keep_default_na=False)
    return sample.iloc[n_train: n_train + n_test].reset_index(drop=True)


def versus(results: dict[str, dict[str, Any]], proto: str, reference: str, boot: dict[str, Any], seed: int) -> list[str]:
    """Rows: each configuration's encoder (and reranker) ROC-AUC minus `reference`'s encoder on the same test pairs,
    with a paired cluster-bootstrap interval: reported only, never what a default is chosen by (`chosen`)."""
    ref = results.get(reference, {}).get(proto)
    if not ref or "test_scores" not in ref:
        return []
    test = test_frame(load_protocol(), proto)
    if len(test) != len(ref["test_scores"]["encoder"]):
        return []
    y = test["is_duplicate"].to_numpy(dtype=np.int64)
    rows = []
    for label, r in results.items():
        if label == reference or proto not in r or "test_scores" not in r[proto]:
            continue
        for scorer in ("encoder", "reranker"):
            if scorer not in r[proto]["test_scores"]:
                continue
            scores = {"new": np.asarray(r[proto]["test_scores"][scorer]), "old": np.asarray(ref["test_scores"]["encoder"])}
            f = pair_figures(y, scores, pair_groups(test), boot, seed, reference="old")["new"]["roc_auc_minus_old"]
            rows.append(f"| {label} {scorer} − {reference} encoder | {_fig(f, True)} |")
    return rows


def chosen(results: dict[str, dict[str, Any]], proto: str) -> str | None:
    """The configuration a default is taken from: the best calibration ROC-AUC, ties broken by the best selection-part
    MRR@10 of any method; test figures play no part."""
    have = {label: r[proto]["selection"] for label, r in results.items() if proto in r and r[proto].get("selection")}
    if not have:
        return None
    return max(have, key=lambda k: (have[k]["calibration_roc_auc"], max(have[k]["retrieval_val_mrr@10"].values(), default=0.0)))


def render(results: dict[str, dict[str, Any]]) -> str:
    lines = ["# Real-data quality benchmark", "",
             "`python -m bench.quality --out bench/results/quality [--protocol sample|larger] [--config FILE.json] [--label NAME]`; "
             "protocol decisions in [bench/quality_protocol.json](../../quality_protocol.json). Figures: estimate (95% cluster-bootstrap "
             "interval, 1,000 resamples of whole duplicate clusters).", ""]
    for proto in PROTOCOLS:
        have = {label: r[proto] for label, r in results.items() if proto in r}
        if not have:
            continue
        lines += [f"## {proto}", "", "Pairs (test split):", "",
                  "| configuration | scorer | ROC-AUC | PR-AUC | ROC-AUC − lexical |", "|---|---|---|---|---|"]
        for label, r in have.items():
            for scorer, f in r["pairs"].items():
                lines.append(f"| {label} | {scorer} | {_fig(f['roc_auc'])} | {_fig(f['pr_auc'])} | {_fig(f.get('roc_auc_minus_lexical'), True)} |")
        lines += ["", "Retrieval (test queries):", "",
                  "| configuration | method | MRR@10 | nDCG@10 | recall@10 | MRR@10 − lexical |", "|---|---|---|---|---|---|"]
        for label, r in have.items():
            for method, f in r["retrieval"].items():
                mark = " (search default)" if method == r.get("search_default") else ""
                lines.append(f"| {label} | {method}{mark} | {_fig(f['mrr@10'])} | {_fig(f['ndcg@10'])} | {_fig(f['recall@10'])} "
                             f"| {_fig(f.get('mrr@10_minus_lexical'), True)} |")
        lines += ["", "Selection figures (what configurations are chosen by; never test):", "",
                  "| configuration | calibration ROC-AUC (encoder) | selection-part MRR@10 of each method |", "|---|---|---|"]
        for label, r in have.items():
            sel = r.get("selection")
            if sel:
                by = {"search": " (search reranker, out-of-fold)", "pair": " (pair reranker)"}.get(sel.get("reranked_by") or "", "")
                mrr = ", ".join(f"{m}{by if m == 'reranked' else ''} {v:.4f}" for m, v in sel["retrieval_val_mrr@10"].items())
                lines.append(f"| {label} | {sel['calibration_roc_auc']:.4f} | {mrr} |")
        if (best := chosen(results, proto)) is not None:
            lines += ["", f"Chosen on these selection figures alone: `{best}`."]
        lines += ["", "| configuration | training s | epochs (best) | whole run s (CPU s) | peak RSS GiB | scoring pairs/s (per CPU s) | measured |",
                  "|---|---|---|---|---|---|---|"]
        for label, r in have.items():
            t = r["training"]
            pre = f" + pretrain {t['pretrain_seconds']}" if "pretrain_seconds" in t else ""
            sc = r.get("scoring")
            score = f"{sc['pairs_per_s']:,} ({sc['pairs_per_cpu_s']:,})" if sc else "—"
            lines.append(f"| {label} | {t['train_seconds']}{pre} | {t['epochs_run']} ({t['best_epoch']}) | {t['run_wall_seconds']} "
                         f"({t['run_cpu_seconds']}) | {t['peak_rss_gib']} | {score} | {results[label]['meta']['finished'][:16]}, "
                         f"load {results[label]['meta']['load_before']} |")
        diffs = versus(results, proto, REFERENCE_LABEL, load_protocol()["bootstrap"], load_protocol()["seed"])
        if diffs:
            lines += ["", f"Test ROC-AUC against `{REFERENCE_LABEL}`'s encoder (paired, same resamples):", "",
                      "| comparison | difference (95% interval) |", "|---|---|", *diffs]
        if proto == "larger":
            c = next(iter(have.values()))["data"]
            lines += ["", f"Larger data: {c['rows']:,} rows ({c['train_shared_pairs']:,} shared training-cluster pairs, "
                      f"{c['drawn_negatives']:,} drawn negatives, {c['sample_training_rows_kept']:,} sample training-range rows, "
                      f"{c['n_test']:,} sample test rows); {c['test_clusters']:,} of {c['shared_clusters']:,} clusters held out; "
                      f"retrieval: {c['queries']:,} queries against {c['corpus']:,} questions."]
        lines.append("")
    for label, r in results.items():
        lines.append(f"- `{label}`: config {r['meta']['config'] or 'defaults'}; commit {r['meta']['commit']}")
    return "\n".join(lines) + "\n"
