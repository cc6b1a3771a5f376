"""Synthetic Quora Question Pairs TSV in the release's exact format, for offline demos and tests."""

from __future__ import annotations

import csv
import functools
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from qdup.data.demo_vocabulary import INTENTS_FILE, Intent, load_vocabulary, resource_dir
from qdup.data.generated import record_generated
from qdup.errors import ConfigError
from qdup.fileio import atomic_write_bytes, sha256_file

__all__ = ["COLUMNS", "FULL_ROWS", "generate_pairs", "write_demo_tsv"]

COLUMNS = ("id", "qid1", "qid2", "question1", "question2", "is_duplicate")
FULL_ROWS = 404_290  # size of the real release

# Shares matched to the real release (36.9% duplicates).
_DUPLICATE_SHARE = 0.37
# Non-duplicate strategies: change one filler (hard negative), change the intent but keep the
# filler (topical negative), or an unrelated question (the real file has those too).
_NEG_SWAP_FILLER = 0.45
_NEG_SWAP_INTENT = 0.42  # the rest (0.13) are unrelated
# Probability that question1 of a pair is a question already asked in an earlier pair; with the
# source chosen uniformly among earlier rows this is a rich-get-richer process, so a few questions
# recur many times, as in the real data.
_REUSE = 0.24
# Probability that the two columns of a pair are swapped, so recurring questions appear as
# question1 and question2 alike.
_SWAP_COLUMNS = 0.5
# Rounds of redrawing bad question2 draws; a handful suffice at full size.
_MAX_REDRAWS = 50
_P_MOD = 0.5  # an intent-specific modifier inside the question ("... as a beginner?")
_P_TRAIL = 0.17  # a trailing sentence ("Please explain in detail.")
# Number of leading context sentences: 0, 1, 2, 3, 4; long multi-sentence questions are rare.
_CTX_COUNTS = np.array([0.785, 0.176, 0.034, 0.0045, 0.0005])
# Styles: as written, all lower case, no question mark, lower-case first letter.
_STYLES = np.array([0.93, 0.035, 0.025, 0.01])


@dataclass(frozen=True)
class _Tables:
    """The vocabulary compiled to arrays so that specs can be drawn with numpy."""

    weights: np.ndarray  # intent sampling probabilities
    group: np.ndarray  # topic group index per intent
    n_tpl: np.ndarray  # templates per intent
    tpl_off: np.ndarray  # offset of an intent's first template in `templates`
    cat_a: np.ndarray  # category index of slot a, -1 for none
    cat_b: np.ndarray  # category index of slot b, -1 for none (or for paired slots)
    paired: np.ndarray  # bool: slot b is the second half of slot a's pair item
    symmetric: np.ndarray
    mod_off: np.ndarray  # offset into `mods`, -1 when the intent takes no modifier
    n_mod: np.ndarray
    partners: np.ndarray  # [intent, k] candidate intents for a topical negative
    n_partners: np.ndarray
    cat_size: np.ndarray
    cat_off: np.ndarray  # offset of a category's first item in `fill_a`/`fill_b`
    templates: list[str]
    fill_a: list[str]  # item text (first half for pairs); ends with "" so index -1 is empty
    fill_b: list[str]  # item text (second half for pairs); ends with ""
    mods: list[str]  # ends with ""
    contexts: list[str]  # ends with ""
    ctx_fam_weight: np.ndarray  # probabilities of the short families
    ctx_fam_off: np.ndarray  # offset of each context family; the last family is long sentences
    ctx_fam_size: np.ndarray
    trailing: list[str]  # ends with ""
    n_trailing: int


def _offsets(sizes: list[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)


def _partner_intents(intents: tuple[Intent, ...]) -> list[list[int]]:
    """Topical negatives: another intent over the same filler category (keeps the filler, so the
    pair shares its most specific word), else another intent of the same group."""
    out = []
    for k, it in enumerate(intents):
        others = [(j, o) for j, o in enumerate(intents) if j != k]
        if it.slot_a is not None:
            cands = [j for j, o in others if o.slot_a == it.slot_a]
        else:
            cands = [j for j, o in others if o.group == it.group and o.slot_a is None]
        cands = cands or [j for j, o in others if o.group == it.group]
        if not cands:
            raise ConfigError(f"{resource_dir() / INTENTS_FILE}: intent {it.name} has no partner intent for topical negatives")
        out.append(cands)
    return out


@functools.cache
def _tables() -> _Tables:
    v = load_vocabulary()
    intents = v.intents
    cat_index = {c: k for k, c in enumerate(v.categories)}
    items = [item if isinstance(item, tuple) else (item, item) for cat in v.categories.values() for item in cat]
    mod_start = dict(zip(v.modifiers, _offsets([len(m) for m in v.modifiers.values()]).tolist()))
    group_names = list(dict.fromkeys(it.group for it in intents))

    def index(names: list[str | None]) -> np.ndarray:
        return np.array([-1 if c is None else cat_index[c] for c in names], np.int64)

    paired = np.array([it.slot_b is not None and it.slot_b == it.slot_a and v.is_paired(it.slot_a) for it in intents])
    weights = np.array([it.weight for it in intents])
    part_lists = _partner_intents(intents)
    partners = np.zeros((len(intents), max(len(p) for p in part_lists)), np.int64)
    for k, p in enumerate(part_lists):
        partners[k, : len(p)] = p

    # Context sentences come in families of very different sizes; a family is drawn first so
    # that the big generated families do not drown the hand-written sentences.
    families = [f.sentences() for f in (*v.short_contexts, v.long_contexts)]
    fam_size = [len(f) for f in families]

    return _Tables(
        weights=weights / weights.sum(),
        group=np.array([group_names.index(it.group) for it in intents], np.int64),
        n_tpl=np.array([len(it.templates) for it in intents], np.int64),
        tpl_off=_offsets([len(it.templates) for it in intents]),
        cat_a=index([it.slot_a for it in intents]),
        cat_b=np.where(paired, -1, index([it.slot_b for it in intents])),
        paired=paired,
        symmetric=np.array([it.symmetric for it in intents]),
        mod_off=np.array([-1 if it.modifiers is None else mod_start[it.modifiers] for it in intents], np.int64),
        n_mod=np.array([0 if it.modifiers is None else len(v.modifiers[it.modifiers]) for it in intents], np.int64),
        partners=partners,
        n_partners=np.array([len(p) for p in part_lists], np.int64),
        cat_size=np.array([len(c) for c in v.categories.values()], np.int64),
        cat_off=_offsets([len(c) for c in v.categories.values()]),
        templates=[tpl for it in intents for tpl in it.templates],
        fill_a=[a for a, _ in items] + [""],
        fill_b=[b for _, b in items] + [""],
        mods=[m for ms in v.modifiers.values() for m in ms] + [""],
        contexts=[c for fam in families for c in fam] + [""],
        ctx_fam_weight=np.array([f.weight for f in v.short_contexts]),
        ctx_fam_off=_offsets(fam_size),
        ctx_fam_size=np.array(fam_size, np.int64),
        trailing=[*v.trailing, ""],
        n_trailing=len(v.trailing),
    )


# A question is a "spec": parallel int arrays; rendering a spec is deterministic, so equal specs
# give equal texts (and equal qids).
_SPEC_KEYS = ("intent", "tpl", "fa", "fb", "mod", "c1", "c2", "c3", "trail", "style")
Spec = dict[str, np.ndarray]


def _pick(rng: np.random.Generator, sizes: np.ndarray) -> np.ndarray:
    """One uniform integer in [0, size) per element (size >= 1)."""
    return np.minimum((rng.random(sizes.shape[0]) * sizes).astype(np.int64), sizes - 1)


def _pick_except(rng: np.random.Generator, sizes: np.ndarray, old: np.ndarray,
                 other: np.ndarray) -> np.ndarray:
    """Uniform in [0, size) excluding `old` and, where >= 0 and != old, `other`."""
    has_other = (other >= 0) & (other != old)
    k = _pick(rng, sizes - 1 - has_other)
    lo = np.where(has_other, np.minimum(old, other), old)
    hi = np.where(has_other, np.maximum(old, other), np.iinfo(np.int64).max)
    # Shift past the excluded values in increasing order: maps [0, size-#excluded) onto the rest.
    k = k + (k >= lo)
    return k + (k >= hi)


def _fresh_core(rng: np.random.Generator, t: _Tables, intent: np.ndarray) -> Spec:
    """Template, fillers and modifier for given intents, drawn independently."""
    n = intent.shape[0]
    ca, cb = t.cat_a[intent], t.cat_b[intent]
    fa = np.where(ca >= 0, _pick(rng, np.maximum(t.cat_size[ca], 1)), -1)
    fb_any = _pick(rng, np.maximum(t.cat_size[cb], 1))
    # Two slots of one category (Python vs Java) must differ.
    same = (cb >= 0) & (cb == ca)
    fb_same = _pick_except(rng, np.maximum(t.cat_size[cb], 3), fa, np.full(n, -1))
    fb = np.where(cb >= 0, np.where(same, fb_same, fb_any), -1)
    return {
        "intent": intent,
        "tpl": _pick(rng, t.n_tpl[intent]),
        "fa": fa,
        "fb": fb,
        "mod": _fresh_mod(rng, t, intent),
    }


def _fresh_mod(rng: np.random.Generator, t: _Tables, intent: np.ndarray) -> np.ndarray:
    has = (rng.random(intent.shape[0]) < _P_MOD) & (t.n_mod[intent] > 0)
    k = _pick(rng, np.maximum(t.n_mod[intent], 1))
    return np.where(has, k, -1)


def _fresh_options(rng: np.random.Generator, t: _Tables, n: int) -> Spec:
    """Context sentences, trailing sentence and style: independent of the question's meaning."""
    n_ctx = rng.choice(len(_CTX_COUNTS), size=n, p=_CTX_COUNTS / _CTX_COUNTS.sum())

    def sentence(family: np.ndarray) -> np.ndarray:
        return t.ctx_fam_off[family] + _pick(rng, t.ctx_fam_size[family])

    n_short = t.ctx_fam_size.shape[0] - 1
    short = [sentence(rng.choice(n_short, size=n, p=t.ctx_fam_weight)) for _ in range(2)]
    long_ = [sentence(np.full(n, n_short)) for _ in range(2)]
    # One or two short sentences; from three on, long story sentences make the length tail.
    c1 = np.where(n_ctx >= 1, short[0], -1)
    c2 = np.where(n_ctx >= 4, long_[1], np.where(n_ctx >= 2, short[1], -1))
    c3 = np.where(n_ctx >= 3, long_[0], -1)
    trail = np.where(rng.random(n) < _P_TRAIL, _pick(rng, np.full(n, t.n_trailing)), -1)
    style = rng.choice(len(_STYLES), size=n, p=_STYLES / _STYLES.sum())
    return {"c1": c1, "c2": c2, "c3": c3, "trail": trail, "style": style}


def _fresh(rng: np.random.Generator, t: _Tables, n: int) -> Spec:
    intent = rng.choice(t.weights.shape[0], size=n, p=t.weights)
    return _fresh_core(rng, t, intent) | _fresh_options(rng, t, n)


def _take(spec: Spec, idx: np.ndarray) -> Spec:
    return {k: v[idx] for k, v in spec.items()}


def _where(mask: np.ndarray, a: Spec, b: Spec) -> Spec:
    return {k: np.where(mask, a[k], b[k]) for k in _SPEC_KEYS}


# Pair kinds for question2.
_DUP, _SWAP_FILLER, _SWAP_INTENT, _RANDOM = 0, 1, 2, 3


def _partner(rng: np.random.Generator, t: _Tables, q1: Spec, kind: np.ndarray) -> Spec:
    """question2 specs for question1 specs `q1`, one pair kind per row."""
    n = kind.shape[0]
    intent, tpl, fa, fb = q1["intent"], q1["tpl"], q1["fa"], q1["fb"]
    ntpl = t.n_tpl[intent]
    other_tpl = (tpl + 1 + _pick(rng, ntpl - 1)) % ntpl
    keep_mod = rng.random(n) < 0.5
    mod_same_intent = np.where(keep_mod, q1["mod"], _fresh_mod(rng, t, intent))
    options = _fresh_options(rng, t, n)

    # Duplicate: same intent and fillers, a different paraphrase template.
    swap = t.symmetric[intent] & (rng.random(n) < 0.5)
    dup = {"intent": intent, "tpl": other_tpl, "fa": np.where(swap, fb, fa),
           "fb": np.where(swap, fa, fb), "mod": mod_same_intent} | options

    # Hard negative: same intent (often the same template), one filler replaced.
    ca, cb = t.cat_a[intent], t.cat_b[intent]
    use_b = (cb >= 0) & (rng.random(n) < 0.5)
    same_cat = (cb >= 0) & (cb == ca)
    new_a = _pick_except(rng, np.maximum(t.cat_size[ca], 3), fa, np.where(same_cat, fb, -1))
    new_b = _pick_except(rng, np.maximum(t.cat_size[cb], 3), fb, np.where(same_cat, fa, -1))
    hard = {"intent": intent, "tpl": np.where(rng.random(n) < 0.5, tpl, other_tpl),
            "fa": np.where(use_b, fa, new_a), "fb": np.where(use_b, new_b, fb),
            "mod": mod_same_intent} | options

    # Topical negative: a partner intent; fillers of a matching category are kept.
    new_intent = t.partners[intent, _pick(rng, t.n_partners[intent])]
    core = _fresh_core(rng, t, new_intent)
    nca, ncb = t.cat_a[new_intent], t.cat_b[new_intent]
    keep_a = (nca >= 0) & (nca == ca)
    keep_b = (ncb >= 0) & (ncb == cb)
    ta = np.where(keep_a, fa, core["fa"])
    tb = np.where(keep_b, fb, core["fb"])
    clash = (ncb >= 0) & (ncb == nca) & (ta == tb)
    tb = np.where(clash, _pick_except(rng, np.maximum(t.cat_size[ncb], 3), ta, np.full(n, -1)), tb)
    topical = core | {"fa": ta, "fb": tb} | options

    unrelated = _fresh(rng, t, n)

    # Intents without a filler cannot swap one: they take a topical negative instead.
    kind = np.where((kind == _SWAP_FILLER) & (ca < 0), _SWAP_INTENT, kind)
    out = _where(kind == _DUP, dup, unrelated)
    out = _where(kind == _SWAP_FILLER, hard, out)
    return _where(kind == _SWAP_INTENT, topical, out)


def _render(t: _Tables, s: Spec) -> list[str]:
    """Texts for specs: context sentences, the filled template with its modifier, a trailer."""
    g_tpl = (t.tpl_off[s["intent"]] + s["tpl"]).tolist()
    ca, cb = t.cat_a[s["intent"]], t.cat_b[s["intent"]]
    a_idx = np.where(ca >= 0, t.cat_off[ca] + s["fa"], -1)
    # Paired categories take both halves from the slot-a item.
    b_idx = np.where(t.paired[s["intent"]], a_idx, np.where(cb >= 0, t.cat_off[cb] + s["fb"], -1))
    m_idx = np.where(s["mod"] >= 0, t.mod_off[s["intent"]] + s["mod"], -1)
    templates, fill_a, fill_b, mods = t.templates, t.fill_a, t.fill_b, t.mods
    contexts, trailing = t.contexts, t.trailing
    out = []
    for g, a, b, m, c1, c2, c3, tr, st in zip(
        g_tpl, a_idx.tolist(), b_idx.tolist(), m_idx.tolist(), s["c1"].tolist(),
        s["c2"].tolist(), s["c3"].tolist(), s["trail"].tolist(), s["style"].tolist(),
    ):
        core = templates[g].format(a=fill_a[a], b=fill_b[b])  # index -1 is the "" sentinel
        if m >= 0:
            core = f"{core[:-1]} {mods[m]}?"
        if st == 2:
            core = core[:-1]
        parts = [contexts[c1], contexts[c2], contexts[c3], core, trailing[tr]]
        text = " ".join(p for p in parts if p)
        if st == 1:
            text = text.lower()
        elif st == 3:
            text = text[0].lower() + text[1:]
        out.append(text)
    return out


def _check_rows(rows: int) -> None:
    if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)) or rows < 1:
        raise ConfigError(f"rows must be a whole number of at least 1, got {rows!r}")


def generate_pairs(rows: int, seed: int = 0) -> pd.DataFrame:
    """A synthetic Quora Question Pairs table with the release's columns and dtypes."""
    _check_rows(rows)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative whole number, got {seed!r}")
    rows = int(rows)
    t = _tables()
    rng = np.random.default_rng(seed)

    q1 = _fresh(rng, t, rows)
    # Re-asked questions: row i copies question1 of a uniformly chosen earlier row; following the
    # pointers to a fresh root makes copies of copies resolve to one spec (one text).
    reuse = rng.random(rows) < _REUSE
    reuse[0] = False
    src = np.where(reuse, (rng.random(rows) * np.arange(rows)).astype(np.int64), np.arange(rows))
    while True:
        nxt = src[src]
        if np.array_equal(nxt, src):
            break
        src = nxt
    q1 = _take(q1, src)

    dup = rng.random(rows) < _DUPLICATE_SHARE
    u = rng.random(rows)
    kind = np.where(dup, _DUP, np.where(u < _NEG_SWAP_FILLER, _SWAP_FILLER,
                                        np.where(u < _NEG_SWAP_FILLER + _NEG_SWAP_INTENT,
                                                 _SWAP_INTENT, _RANDOM)))
    q2 = _partner(rng, t, q1, kind)
    text1 = np.array(_render(t, q1), dtype=object)
    text2 = np.array(_render(t, q2), dtype=object)
    # Redraw question2 where the draw went wrong: equal to question1, an "unrelated" question
    # from question1's own topic group (it could be a paraphrase, i.e. a mislabelled duplicate),
    # or a pair already asked in an earlier row (the release has no repeated pairs; repeats
    # would also leak between train and test). Only rows still wrong are redrawn each round;
    # texts are compared through integer codes so that a round costs O(rows) in numpy.
    codes, uniques = pd.factorize(np.concatenate([text1, text2]), sort=False)
    code_of = {text: k for k, text in enumerate(uniques.tolist())}
    c1, c2 = codes[:rows].astype(np.int64), codes[rows:].astype(np.int64)
    group = t.group
    for _ in range(_MAX_REDRAWS):
        related = (kind == _RANDOM) & (group[q1["intent"]] == group[q2["intent"]])
        key = (np.minimum(c1, c2) << 32) | np.maximum(c1, c2)
        repeated = pd.Series(key).duplicated(keep="first").to_numpy()
        bad = np.flatnonzero((c1 == c2) | related | repeated)
        if bad.size == 0:
            break
        redo = _partner(rng, t, _take(q1, bad), kind[bad])
        for k in _SPEC_KEYS:
            q2[k][bad] = redo[k]
        new_texts = _render(t, redo)
        text2[bad] = new_texts
        c2[bad] = [code_of.setdefault(x, len(code_of)) for x in new_texts]
    if (c1 == c2).any() or ((kind == _RANDOM) & (group[q1["intent"]] == group[q2["intent"]])).any():
        raise RuntimeError("could not draw distinct, correctly labelled question pairs")

    flip = rng.random(rows) < _SWAP_COLUMNS
    text1, text2 = np.where(flip, text2, text1), np.where(flip, text1, text2)

    # qids in order of first appearance, row by row (row 0 gets 1 and 2, like the release).
    both = np.empty(2 * rows, dtype=object)
    both[0::2], both[1::2] = text1, text2
    codes, _ = pd.factorize(both, sort=False)
    codes = codes.astype(np.int64) + 1
    return pd.DataFrame({
        "id": np.arange(rows, dtype=np.int64),
        "qid1": codes[0::2],
        "qid2": codes[1::2],
        # Plain lists: pandas infers the same text dtype as read_csv does for these columns.
        "question1": text1.tolist(),
        "question2": text2.tolist(),
        "is_duplicate": dup.astype(np.int64),
    })


def write_demo_tsv(path: Path, rows: int = FULL_ROWS, seed: int = 0) -> dict:
    """Write a synthetic release to `path` atomically; return its path, rows, duplicates, sha256."""
    _check_rows(rows)
    path = Path(path)
    df = generate_pairs(rows, seed)
    buf = io.StringIO()
    # The release is CSV with tabs: minimal quoting, doubled inner quotes, "\n" line ends.
    df.to_csv(buf, sep="\t", index=False, quoting=csv.QUOTE_MINIMAL, quotechar='"',
              doublequote=True, lineterminator="\n")
    data = buf.getvalue().encode("utf-8")
    atomic_write_bytes(path, data)
    digest = sha256_file(path)
    if digest != hashlib.sha256(data).hexdigest():  # pragma: no cover - disk corruption
        raise OSError(f"{path} does not hold what was written")
    info = {
        "path": str(path),
        "rows": int(len(df)),
        "duplicates": int(df["is_duplicate"].sum()),
        "sha256": digest,
    }
    # Known by content from now on: a model trained on this file says it was generated (card, run summary, /v1/model).
    record_generated({**info, "seed": seed})
    return info
