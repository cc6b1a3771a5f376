"""The demo generator's word lists and templates, read and checked from qdup/resources/demo/*.json."""

from __future__ import annotations

import functools
import itertools
import string
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from qdup.errors import ConfigError

__all__ = ["ContextFamily", "Filler", "Intent", "NumberRange", "Vocabulary", "load_vocabulary", "resource_dir"]

CATEGORIES_FILE = "categories.json"
MODIFIERS_FILE = "modifiers.json"
INTENTS_FILE = "intents.json"
CONTEXTS_FILE = "contexts.json"

# A filler is one string, or a pair whose halves fill {a} and {b} of one template ("affect"/"effect").
Filler = str | tuple[str, str]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Intent(_Frozen):
    """A question intent: paraphrase templates whose {a}/{b} slots take fillers of the named categories."""

    name: str
    group: str  # topic group: an unrelated negative never comes from question1's own group
    weight: float = Field(gt=0)  # relative sampling weight
    slot_a: str | None = None  # category filling {a}
    slot_b: str | None = None  # category filling {b}; equal to slot_a for a category of pairs
    modifiers: str | None = None  # name of a list in modifiers.json
    symmetric: bool = False  # {a} and {b} may swap in a paraphrase
    templates: tuple[str, ...] = Field(min_length=2)


class NumberRange(_Frozen):
    """The whole numbers first..last, both included."""

    first: int
    last: int


class ContextFamily(_Frozen):
    """Context sentences: every template filled with every combination of the slot values."""

    name: str
    weight: float | None = Field(default=None, gt=0)  # share among the short families
    templates: tuple[str, ...] = Field(min_length=1)
    slots: dict[str, tuple[str, ...] | NumberRange] = {}
    distinct: bool = False  # skip combinations that repeat a value ("move from Delhi to Delhi")

    def sentences(self) -> list[str]:
        names = list(self.slots)
        values = [range(v.first, v.last + 1) if isinstance(v, NumberRange) else v for v in self.slots.values()]
        return [
            template.format(**dict(zip(names, combo)))
            for template in self.templates
            for combo in itertools.product(*values)
            if not self.distinct or len(set(combo)) == len(combo)
        ]


class _CategoriesFile(_Frozen):
    about: str
    categories: dict[str, tuple[str, ...] | tuple[tuple[str, str], ...]]


class _ModifiersFile(_Frozen):
    about: str
    modifiers: dict[str, tuple[str, ...]]


class _IntentsFile(_Frozen):
    about: str
    intents: tuple[Intent, ...] = Field(min_length=1)


class _ContextsFile(_Frozen):
    about: str
    short_families: tuple[ContextFamily, ...] = Field(min_length=1)
    long_family: ContextFamily
    trailing: tuple[str, ...] = Field(min_length=1)


@dataclass(frozen=True)
class Vocabulary:
    """Everything the generator draws from; the order of every list is part of the seeded output."""

    categories: Mapping[str, tuple[Filler, ...]]
    modifiers: Mapping[str, tuple[str, ...]]
    intents: tuple[Intent, ...]
    short_contexts: tuple[ContextFamily, ...]  # drawn by weight for the first and second context sentence
    long_contexts: ContextFamily  # long sentences for the third and fourth: the tail of the length distribution
    trailing: tuple[str, ...]

    def intent(self, name: str) -> Intent:
        for it in self.intents:
            if it.name == name:
                return it
        raise KeyError(name)

    def is_paired(self, category: str) -> bool:
        """True for a category of pairs, whose items fill both slots of one template."""
        return isinstance(self.categories[category][0], tuple)


def resource_dir() -> Traversable:
    """The packaged vocabulary files (installed as package data)."""
    return resources.files("qdup") / "resources" / "demo"


@functools.cache
def load_vocabulary(directory: Traversable | None = None) -> Vocabulary:
    """The vocabulary in `directory` (default: the packaged one), checked; ConfigError names the file and field."""
    root = resource_dir() if directory is None else directory
    cats = _read(root, CATEGORIES_FILE, _CategoriesFile)
    mods = _read(root, MODIFIERS_FILE, _ModifiersFile)
    intents = _read(root, INTENTS_FILE, _IntentsFile)
    ctx = _read(root, CONTEXTS_FILE, _ContextsFile)
    vocab = Vocabulary(
        categories=cats.categories, modifiers=mods.modifiers, intents=intents.intents,
        short_contexts=ctx.short_families, long_contexts=ctx.long_family, trailing=ctx.trailing,
    )
    _check_categories(root / CATEGORIES_FILE, vocab)
    _check_intents(root / INTENTS_FILE, vocab)
    _check_contexts(root / CONTEXTS_FILE, vocab)
    return vocab


_Model = TypeVar("_Model", bound=BaseModel)


def _read(root: Traversable, name: str, model: type[_Model]) -> _Model:
    path = root / name
    try:
        return model.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"{path}: missing vocabulary file") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(file)"
        raise ConfigError(f"{path}: {field}: {err['msg']}") from None


def _fields(template: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}


def _check_categories(path: Traversable, vocab: Vocabulary) -> None:
    # A filler in two categories would give one text two meanings (and so, possibly, two labels).
    seen: dict[Filler, str] = {}
    for name, items in vocab.categories.items():
        if len(items) < 3:
            # Two slots of one category must differ and a hard negative replaces one: three at least.
            raise ConfigError(f"{path}: categories.{name}: needs at least 3 items, has {len(items)}")
        for item in items:
            if item in seen:
                raise ConfigError(f"{path}: categories.{name}: {item!r} is also in categories.{seen[item]}")
            seen[item] = name


def _check_intents(path: Traversable, vocab: Vocabulary) -> None:
    for k, it in enumerate(vocab.intents):
        where = f"{path}: intents.{k} ({it.name})"
        for slot in (it.slot_a, it.slot_b):
            if slot is not None and slot not in vocab.categories:
                raise ConfigError(f"{where}: unknown category {slot!r} (see {CATEGORIES_FILE})")
        if it.modifiers is not None and it.modifiers not in vocab.modifiers:
            raise ConfigError(f"{where}: unknown modifier list {it.modifiers!r} (see {MODIFIERS_FILE})")
        if len(set(it.templates)) != len(it.templates):
            raise ConfigError(f"{where}: templates must be distinct")
        slots = {s for s, c in (("a", it.slot_a), ("b", it.slot_b)) if c is not None}
        for template in it.templates:
            # A modifier goes before the final question mark.
            if not template.endswith("?"):
                raise ConfigError(f"{where}: template {template!r} must end with '?'")
            if _fields(template) != slots:
                raise ConfigError(f"{where}: template {template!r} must use exactly the slots {sorted(slots)}")
    if len({it.name for it in vocab.intents}) != len(vocab.intents):
        raise ConfigError(f"{path}: intents: names must be unique")


def _check_contexts(path: Traversable, vocab: Vocabulary) -> None:
    weights = [f.weight for f in vocab.short_contexts]
    if any(w is None for w in weights) or abs(sum(w or 0.0 for w in weights) - 1.0) > 1e-9:
        raise ConfigError(f"{path}: short_families: every family needs a weight and the weights must sum to 1")
    if vocab.long_contexts.weight is not None:
        raise ConfigError(f"{path}: long_family.weight: the long family takes no weight")
    for family in (*vocab.short_contexts, vocab.long_contexts):
        for template in family.templates:
            # A template may leave a slot unused: it then repeats once per value, which weights it.
            if not _fields(template) <= set(family.slots):
                raise ConfigError(f"{path}: family {family.name}: template {template!r} uses a slot not among "
                                  f"{sorted(family.slots)}")
