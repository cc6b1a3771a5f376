"""Where the benchmarks find the real Quora text: `../shared/data/` beside the checkout (or `$QDUP_SHARED`).

It is read at run time and never copied into the project; a benchmark that needs it skips without it.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("QDUP_SHARED", REPO.parent / "shared"))
if not SHARED.is_dir():
    SHARED = Path("/work/shared")
REAL_PAIRS = SHARED / "data" / "quora_real_duplicate_pairs.tsv"
