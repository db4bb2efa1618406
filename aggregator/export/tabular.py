"""Candidate lists for spreadsheets and scripts: CSV, JSON and JSON Lines with the stable COLUMNS.

Values are the same in every format: datetimes as ISO 8601 UTC ("2024-05-06T09:30:00Z", naive ones
taken as UTC), missing values empty (CSV) or null (JSON). CSV follows RFC 4180 (CRLF, quotes
doubled, fields with commas, quotes or line breaks quoted) and opens safely in a spreadsheet:
text cells that a spreadsheet would run as a formula get a leading apostrophe.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable
from datetime import UTC, datetime

from aggregator.export import COLUMNS, ExportRow

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_BOM = "\ufeff"
# Line separators JSON leaves raw but str.splitlines() and some JSONL readers split on.
_LINE_SEPARATORS = {"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"}

Value = str | int | float | None


def row_values(row: ExportRow) -> dict[str, Value]:
    """The COLUMNS of one row as plain JSON-ready values."""
    return {
        "id": row.id,
        "section": row.section,
        "confidence": row.confidence if row.confidence is not None and math.isfinite(row.confidence) else None,
        "item_type": row.item_type,
        "title": row.title,
        "url": row.url,
        "source": row.source,
        "published": iso_utc(row.published),
        "status": row.status,
        "decided_by": row.decided_by,
        "decided_at": iso_utc(row.decided_at),
        "model_version": row.model_version,
    }


def iso_utc(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC to the second, with a Z; a naive datetime is taken to be UTC already."""
    if moment is None:
        return None
    utc = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return utc.replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def render_csv(rows: Iterable[ExportRow], *, bom: bool = False) -> str:
    """A header of COLUMNS and one line per row; `bom` prefixes a UTF-8 byte order mark for Excel."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(COLUMNS)
    for row in rows:
        values = row_values(row)
        writer.writerow([_csv_cell(values[column]) for column in COLUMNS])
    return (_BOM if bom else "") + buffer.getvalue()


def render_json(rows: Iterable[ExportRow]) -> str:
    """A JSON array of objects: COLUMNS plus "summary"."""
    text = json.dumps([_json_object(row) for row in rows], ensure_ascii=False, indent=2, allow_nan=False)
    return _escape_line_separators(text) + "\n"


def render_jsonl(rows: Iterable[ExportRow]) -> str:
    """One JSON object (COLUMNS plus "summary") per line."""
    lines = (
        _escape_line_separators(json.dumps(_json_object(row), ensure_ascii=False, allow_nan=False)) + "\n"
        for row in rows
    )
    return "".join(lines)


def _json_object(row: ExportRow) -> dict[str, Value]:
    values = row_values(row)
    values["summary"] = row.summary
    return values


def _csv_cell(value: Value) -> Value:
    """Text that starts like a formula is prefixed with an apostrophe so it stays text."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def _escape_line_separators(text: str) -> str:
    for raw, escaped in _LINE_SEPARATORS.items():
        text = text.replace(raw, escaped)
    return text
