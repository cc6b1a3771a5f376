"""Builders of malformed TSV files for the data-contract tests, each made from a good file."""

from __future__ import annotations

import os
from pathlib import Path


def _rewrite_lines(good: Path, out: Path, edit) -> Path:
    lines = good.read_text(encoding="utf-8").split("\n")
    out.write_text("\n".join(edit(lines)), encoding="utf-8")
    return out


def _set_field(lines: list[str], row: int, col: int, value: str) -> list[str]:
    fields = lines[row].split("\t")
    fields[col] = value
    lines[row] = "\t".join(fields)
    return lines


def missing_column(good: Path, out: Path) -> Path:
    return _rewrite_lines(good, out, lambda ls: ["\t".join(line.split("\t")[:2] + line.split("\t")[3:]) if line else line for line in ls])


def non_integer_label(good: Path, out: Path) -> Path:
    return _rewrite_lines(good, out, lambda ls: _set_field(ls, 5, -1, "yes"))


def label_out_of_set(good: Path, out: Path) -> Path:
    return _rewrite_lines(good, out, lambda ls: _set_field(ls, 7, -1, "2"))


def duplicated_ids(good: Path, out: Path) -> Path:
    return _rewrite_lines(good, out, lambda ls: _set_field(ls, 9, 0, ls[3].split("\t")[0]))


def empty_file(good: Path, out: Path) -> Path:
    out.write_bytes(b"")
    return out


def cut_mid_line(good: Path, out: Path) -> Path:
    data = good.read_bytes().rstrip(b"\n")
    last_line_start = data.rfind(b"\n") + 1
    # Cut inside the last row's question1, as a download interrupted mid-line would.
    out.write_bytes(data[: last_line_start + (len(data) - last_line_start) // 3])
    return out


def binary_garbage(good: Path, out: Path) -> Path:
    out.write_bytes(bytes(range(256)) * 8 + os.urandom(0) + b"\x00\x01\x02")
    return out


def html_page(good: Path, out: Path) -> Path:
    out.write_text("<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>Not Found</body></html>\n")
    return out


# (builder, words the error message must contain)
BAD_INPUTS = {
    "missing_column": (missing_column, ["expect_table_columns_to_match_ordered_list", "qid2"]),
    "non_integer_label": (non_integer_label, ["is_duplicate", "'yes'"]),
    "label_out_of_set": (label_out_of_set, ["expect_column_values_to_be_in_set", "is_duplicate"]),
    "duplicated_ids": (duplicated_ids, ["expect_column_values_to_be_unique", "'id'"]),
    "empty_file": (empty_file, ["empty"]),
    "cut_mid_line": (cut_mid_line, ["is_duplicate", "<missing>"]),
    "binary_garbage": (binary_garbage, ["binary"]),
    "html_page": (html_page, ["HTML"]),
}
