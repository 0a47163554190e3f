"""Request validation against a model version's stored InputSchema (no Ray, no torch).

Errors name the field (`features.age`, `instances[3].contract`) and become a 422. Things a
model can still answer (a number outside the training range, an unseen category when the
schema allows unknowns, an extra key) are warnings: counted, never refused.

`validate_batch` is what the model replicas call: it checks a whole batch column by column
(a few set and array operations per feature) and hands the predictor columns, not row dicts.
Only when that quick pass finds anything unusual does it run the careful row-by-row checks of
`validate_records`, which word every error and warning; both give the same verdict.

Both are total: no value a caller can send (a huge integer, a lone surrogate in a key, an
odd type from a Python caller) raises; each becomes a FieldIssue, so a bad request is a 422
and never a model error. A number must lie within the float32 range the models compute in.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel

from mlops_assets.lifecycle.bundle import BOOL_FALSE_STRS, BOOL_TRUE_STRS
from mlops_assets.lifecycle.schema import FeatureSpec, InputSchema

log = logging.getLogger(__name__)

MAX_REPORTED_ERRORS = 20
MAX_REPORTED_WARNINGS = 50
# Largest magnitude a number feature may have: the models compute in float32, where a larger
# finite double becomes inf (and the prediction NaN).
MAX_ABS_NUMBER = float(np.finfo(np.float32).max)
MAX_SHOWN_CHARS = 80
_INF = math.inf
_BIG = MAX_ABS_NUMBER
_NONE = type(None)


def safe_text(text: str, limit: int | None = 200) -> str:
    """`text` made encodable as UTF-8 (lone surrogates as `\\udxxx`), cut to `limit` chars."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if limit is not None and len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def _show(value: Any) -> str:
    """A value for an error message: repr, safe to encode, cut to MAX_SHOWN_CHARS."""
    try:
        text = repr(value)
    except Exception:  # an int past the str() digit limit, an odd object
        if isinstance(value, int):
            text = f"<an integer of {value.bit_length()} bits>"
        else:
            text = f"<{type(value).__name__}>"
    return safe_text(text, MAX_SHOWN_CHARS)


def _key_name(key: Any) -> str:
    """A record key as it appears in a field name (any type; safe to encode, bounded)."""
    try:
        text = key if isinstance(key, str) else str(key)
    except Exception:  # a key whose str() raises
        text = f"<{type(key).__name__}>"
    return safe_text(text, MAX_SHOWN_CHARS)


def _error(out: ValidationResult, field: str, message: str, kind: str = "invalid") -> None:
    out.errors.append(FieldIssue(field=field, message=message, kind=kind))


class FieldIssue(BaseModel):
    """One problem with one field of a request."""

    field: str
    message: str
    kind: str = "invalid"


class ValidationResult(BaseModel):
    """Cleaned records (only schema features, in schema order) plus errors and warnings."""

    records: list[dict[str, Any]]
    errors: list[FieldIssue]
    warnings: list[FieldIssue]
    # Every warning counted by (feature, kind), even past the reported ones.
    warning_counts: dict[tuple[str, str], int] = {}

    def warn(self, field: str, feature: str, message: str, kind: str) -> None:
        """Record one warning (the first MAX_REPORTED_WARNINGS are kept in full)."""
        key = (feature, kind)
        self.warning_counts[key] = self.warning_counts.get(key, 0) + 1
        if len(self.warnings) < MAX_REPORTED_WARNINGS:
            self.warnings.append(FieldIssue(field=field, message=message, kind=kind))

    @property
    def ok(self) -> bool:
        """True when no error was found."""
        return not self.errors


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def _check_number(spec: FeatureSpec, value: Any, field: str, out: ValidationResult) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        _error(out, field, f"expected a number, got {_type_name(value)}")
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer past the double range
        _error(out, field, f"{_show(value)} is too large for a number")
        return None
    if not math.isfinite(number):
        out.errors.append(FieldIssue(field=field, message="must be a finite number"))
        return None
    if abs(number) > _BIG:
        _error(out, field, f"{number:g} is beyond the model's number range (±{_BIG:.3g})")
        return None
    if spec.min is not None and number < spec.min:
        out.warn(
            field,
            spec.name,
            f"{number:g} is below the training minimum {spec.min:g}",
            "out_of_range",
        )
    elif spec.max is not None and number > spec.max:
        out.warn(
            field,
            spec.name,
            f"{number:g} is above the training maximum {spec.max:g}",
            "out_of_range",
        )
    return value


def _check_category(spec: FeatureSpec, value: Any, field: str, out: ValidationResult) -> Any:
    if isinstance(value, bool) or not isinstance(value, str | int):
        _error(out, field, f"expected a string, got {_type_name(value)}")
        return None
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        _error(out, field, f"expected a string, got the integer {_show(value)}")
        return None
    text = str(value)
    if spec.categories and text not in spec.categories:
        if not spec.allow_unknown:
            allowed = ", ".join(spec.categories[:20])
            out.errors.append(
                FieldIssue(
                    field=field, message=f"unknown category {_show(text)}; allowed: {allowed}"
                )
            )
            return None
        out.warn(
            field,
            spec.name,
            f"category {_show(text)} was not seen in training",
            "unknown_category",
        )
    return text


def _check_binary(
    spec: FeatureSpec, value: Any, field: str, out: ValidationResult, strings: set[str] | None
) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value in (0, 1):
            return value
        _error(out, field, f"expected true/false or 0/1, got {_show(value)}")
        return None
    if isinstance(value, str):
        text = value.strip()
        if (strings and text in strings) or text.lower() in BOOL_TRUE_STRS | BOOL_FALSE_STRS:
            return value
        allowed = sorted(strings) if strings else ["true", "false"]
        out.errors.append(
            FieldIssue(
                field=field, message=f"{_show(value)} is not a boolean; use one of {allowed}"
            )
        )
        return None
    _error(out, field, f"expected a boolean, got {_type_name(value)}")
    return None


def validate_records(
    schema: InputSchema,
    records: Sequence[Any],
    prefix: str,
    *,
    single: bool = False,
    binary_strings: Mapping[str, set[str]] | None = None,
) -> ValidationResult:
    """Check every record against `schema`; `single` names fields `prefix.x`, else `prefix[i].x`.

    The common case (a finite number in range, a known category) is checked inline; anything
    else goes through the careful per-type checks that word the errors and warnings.
    """
    out = ValidationResult(records=[], errors=[], warnings=[], warning_counts={})
    known = set(schema.names)
    specs = [
        (
            spec.name,
            spec.type,
            -_INF if spec.min is None else spec.min,
            _INF if spec.max is None else spec.max,
            frozenset(spec.categories) if spec.categories else None,
            spec,
        )
        for spec in schema.features
    ]
    strings_of = binary_strings or {}
    for i, record in enumerate(records):
        where = prefix if single else f"{prefix}[{i}]"
        if len(out.errors) >= MAX_REPORTED_ERRORS:
            break
        if not isinstance(record, Mapping):
            _error(out, where, f"expected an object, got {_type_name(record)}")
            continue
        try:
            clean = _check_record(record, where, specs, known, strings_of, out)
        except Exception as exc:  # validation is total: an odd value is a 422
            log.debug("%s could not be validated: %r", where, exc)
            _error(out, where, f"could not be validated ({type(exc).__name__})")
            continue
        out.records.append(clean)
    del out.errors[MAX_REPORTED_ERRORS:]
    return out


def _check_record(
    record: Mapping[str, Any],
    where: str,
    specs: list[tuple[str, str, float, float, frozenset[str] | None, FeatureSpec]],
    known: set[str],
    strings_of: Mapping[str, set[str]],
    out: ValidationResult,
) -> dict[str, Any]:
    """One record's clean values; its errors and warnings go to `out`."""
    clean: dict[str, Any] = {}
    for name, ftype, lo, hi, cats, spec in specs:
        if name not in record:
            _error(out, f"{where}.{name}", "is missing", "missing")
            continue
        value = record[name]
        if value is None:
            if not spec.nullable:
                _error(out, f"{where}.{name}", "must not be null")
            clean[name] = None
            continue
        kind = type(value)
        if ftype == "number":
            if (kind is float or kind is int) and lo <= value <= hi and -_BIG <= value <= _BIG:
                clean[name] = value
            else:
                clean[name] = _check_number(spec, value, f"{where}.{name}", out)
        elif ftype == "category":
            if kind is str and (cats is None or value in cats):
                clean[name] = value
            else:
                clean[name] = _check_category(spec, value, f"{where}.{name}", out)
        else:
            clean[name] = _check_binary(spec, value, f"{where}.{name}", out, strings_of.get(name))
    if len(record) > len(clean):
        for key in record:
            if key not in known:
                # One label for every unknown key: request keys must not grow metric labels.
                out.warn(
                    f"{where}.{_key_name(key)}",
                    "(unknown)",
                    "not a model input; ignored",
                    "unknown_feature",
                )
    return clean


class BatchResult(BaseModel):
    """A validated batch as columns (schema features, in schema order), or its problems."""

    columns: dict[str, list[Any]]
    n: int
    errors: list[FieldIssue]
    warnings: list[FieldIssue]
    warning_counts: dict[tuple[str, str], int] = {}

    @property
    def ok(self) -> bool:
        """True when no error was found."""
        return not self.errors


def _clean_column(spec: FeatureSpec, values: list[Any]) -> bool:
    """True when every value of a column passes without an error or a warning."""
    kinds = set(map(type, values))
    if _NONE in kinds:
        if not spec.nullable:
            return False
        values = [v for v in values if v is not None]
        kinds.discard(_NONE)
        if not values:
            return True
    if spec.type == "number":
        if not kinds <= {int, float}:
            return False
        arr = np.asarray(values, dtype=np.float64)  # OverflowError past the double range
        lo = -_INF if spec.min is None else spec.min
        hi = _INF if spec.max is None else spec.max
        # NaN fails every comparison; inf and float32 overflow fail the magnitude bound.
        return bool(np.abs(arr).max() <= _BIG and arr.min() >= lo and arr.max() <= hi)
    if spec.type == "category":
        if kinds != {str}:
            return False
        return not spec.categories or set(values) <= set(spec.categories)
    return kinds == {bool}


def _column_passes(spec: FeatureSpec, values: list[Any]) -> bool:
    """`_clean_column`, where anything that raises (a huge integer) means: check carefully."""
    try:
        return _clean_column(spec, values)
    except Exception:  # the careful pass words the error
        return False


def validate_batch(
    schema: InputSchema,
    records: Sequence[Any],
    prefix: str,
    *,
    single: bool = False,
    binary_strings: Mapping[str, set[str]] | None = None,
) -> BatchResult:
    """Validate a batch and return it as columns; same verdicts as `validate_records`."""
    names = schema.names
    width = len(names)
    if records and all(type(r) is dict and len(r) == width for r in records):
        try:
            columns = {name: [r[name] for r in records] for name in names}
        except KeyError:  # a key is missing and another is extra: the careful pass says which
            columns = None
        if columns is not None and all(
            _column_passes(spec, columns[spec.name]) for spec in schema.features
        ):
            return BatchResult.model_construct(
                columns=columns, n=len(records), errors=[], warnings=[], warning_counts={}
            )
    slow = validate_records(schema, records, prefix, single=single, binary_strings=binary_strings)
    columns = {name: [r[name] for r in slow.records] for name in names} if slow.ok else {}
    return BatchResult.model_construct(
        columns=columns,
        n=len(slow.records) if slow.ok else 0,
        errors=slow.errors,
        warnings=slow.warnings,
        warning_counts=slow.warning_counts,
    )
