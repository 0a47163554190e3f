"""Validation of raw CSV files with pandera.

`validate_file` never raises for a bad file: every problem it finds (encoding, CSV syntax,
duplicate columns, schema checks, row counts) becomes a `Problem` in the result, so a sensor
can quarantine the file with a full report (mlops_assets/quarantine.py) and carry on.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import pandera.pandas as pa
from pydantic import BaseModel, ConfigDict, Field

from mlops_assets.files import FileTooLarge, ignored_name, read_bounded
from mlops_assets.lifecycle.classes import FALSE_TOKENS, TRUE_TOKENS, canonical_label
from mlops_assets.lifecycle.schema import InputSchema
from mlops_assets.settings import DataConfig, FeatureRule

logger = logging.getLogger(__name__)

MAX_EXAMPLES = 5
_ALL_COLUMNS = ".*"  # regex column key: checks that apply to every column
_BINARY_TOKENS = TRUE_TOKENS | FALSE_TOKENS


class Problem(BaseModel):
    """One failing check: its name, the column (None for file-level checks) and examples."""

    model_config = ConfigDict(extra="forbid")

    check: str
    column: str | None = None
    message: str
    examples: list[str] = Field(default_factory=list)
    count: int | None = None  # failing values, when the check is per value


class ValidationResult(BaseModel):
    """The outcome of validating one raw file; `frame` is the parsed data when `ok`."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    path: Path
    sha256: str
    ok: bool
    rows: int = 0
    columns: list[str] = Field(default_factory=list)
    problems: list[Problem] = Field(default_factory=list)
    frame: pd.DataFrame | None = Field(default=None, exclude=True, repr=False)

    def summary(self) -> str:
        """One line for logs: file, verdict and the failing checks."""
        if self.ok:
            return f"{self.path.name}: ok ({self.rows} rows)"
        checks = ", ".join(f"{p.check}[{p.column}]" if p.column else p.check for p in self.problems)
        return f"{self.path.name}: {len(self.problems)} problem(s): {checks}"


def file_sha256(path: Path) -> str:
    """Return the hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def list_raw_files(raw_dir: Path) -> list[Path]:
    """Return the CSV files in `raw_dir`, sorted by name, skipping hidden and temporary files."""
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        return []
    return sorted(
        p
        for p in raw_dir.iterdir()
        if p.is_file() and not ignored_name(p.name) and p.suffix.lower() == ".csv"
    )


# --- schema -----------------------------------------------------------------------------


def _as_number(series: pd.Series) -> pd.Series:
    return pd.to_numeric(series, errors="coerce")


def _numeric_check() -> pa.Check:
    # Text in a number column fails here, once per bad value; empty cells are left to the
    # nullable and missing-fraction checks.
    return pa.Check(
        lambda s: _as_number(s).notna(),
        name="dtype",
        description="must be a number",
    )


def _finite_check() -> pa.Check:
    return pa.Check(
        lambda s: _as_number(s).isna() | _as_number(s).abs().ne(math.inf),
        name="finite",
        description="must be a finite number",
    )


def _min_check(low: float) -> pa.Check:
    # Non-numeric values pass here: the dtype check reports them.
    return pa.Check(
        lambda s: _as_number(s).isna() | (_as_number(s) >= low),
        name="min",
        description=f"must be at least {low:g}",
    )


def _max_check(high: float) -> pa.Check:
    return pa.Check(
        lambda s: _as_number(s).isna() | (_as_number(s) <= high),
        name="max",
        description=f"must be at most {high:g}",
    )


def _categories_check(categories: list[str]) -> pa.Check:
    allowed = set(categories)
    return pa.Check(
        lambda s: s.astype(str).isin(allowed),
        name="categories",
        description=f"must be one of {sorted(allowed)}",
    )


def _binary_checks() -> list[pa.Check]:
    return [
        pa.Check(
            lambda s: s.astype(str).str.strip().str.lower().isin(_BINARY_TOKENS),
            name="binary_values",
            description="must be a binary value (true/false, yes/no, 1/0)",
        ),
        pa.Check(
            lambda s: s.dropna().astype(str).str.strip().str.lower().nunique() <= 2,
            name="binary_cardinality",
            description="a binary column has at most two distinct values",
        ),
    ]


def _feature_checks(ftype: str, rule: FeatureRule | None) -> list[pa.Check]:
    checks: list[pa.Check] = []
    if ftype == "number":
        checks += [_numeric_check(), _finite_check()]
        if rule is not None and rule.min is not None:
            checks.append(_min_check(rule.min))
        if rule is not None and rule.max is not None:
            checks.append(_max_check(rule.max))
    elif ftype == "binary":
        checks += _binary_checks()
    if rule is not None and rule.categories:
        checks.append(_categories_check(rule.categories))
    return checks


def build_schema(data: DataConfig, reference: InputSchema | None = None) -> pa.DataFrameSchema:
    """Build the pandera schema for raw files from the data config and the champion's schema."""
    target = data.target_column
    target_checks = [
        pa.Check(
            lambda s: s.dropna().astype(str).nunique() >= 2,
            name="target_classes",
            description="the target needs at least two classes",
        )
    ]
    if reference is not None and reference.classes and reference.target == target:
        known = {canonical_label(c) for c in reference.classes}
        target_checks.append(
            pa.Check(
                lambda s: s.map(canonical_label).isin(known),
                name="target_known_classes",
                description=f"must be one of the champion's classes {reference.classes}",
            )
        )
    columns: dict[str, pa.Column] = {
        target: pa.Column(nullable=False, required=True, checks=target_checks),
    }

    reference_specs = {f.name: f for f in reference.features} if reference is not None else {}
    names = list(dict.fromkeys([*data.features, *reference_specs]))
    for name in names:
        if name == target:
            continue
        rule = data.features.get(name)
        spec = reference_specs.get(name)
        ftype = (rule.type if rule is not None else None) or (spec.type if spec else None)
        if rule is not None and spec is not None and rule.type and rule.type != spec.type:
            logger.warning(
                "column %s: config says %s but the champion's schema says %s; using the config",
                name,
                rule.type,
                spec.type,
            )
        if ftype is None and rule is not None and rule.categories:
            ftype = "category"
        nullable = rule.nullable if rule is not None else True
        columns[name] = pa.Column(
            nullable=nullable,
            required=True,
            checks=_feature_checks(ftype or "", rule),
            description=f"{ftype or 'any'} feature",
        )

    limit = data.max_missing_fraction
    columns[_ALL_COLUMNS] = pa.Column(
        regex=True,
        required=False,
        nullable=True,
        checks=[
            pa.Check(
                lambda s: bool(s.isna().mean() <= limit) if len(s) else True,
                name="max_missing_fraction",
                description=f"at most {limit:.0%} of values may be missing",
                ignore_na=False,
            )
        ],
    )
    return pa.DataFrameSchema(columns, name="raw_data", strict=False)


def _category_columns(data: DataConfig, reference: InputSchema | None) -> list[str]:
    """Columns to read as text, so `1` and `01` stay distinct categories."""
    names = [
        name
        for name, rule in data.features.items()
        if rule.type == "category" or (rule.type is None and rule.categories)
    ]
    if reference is not None:
        names += [
            f.name
            for f in reference.features
            if f.type == "category"
            and (
                data.features.get(f.name) is None
                or data.features[f.name].type in (None, "category")
            )
        ]
    return [n for n in dict.fromkeys(names) if n != data.target_column]


# --- reading ------------------------------------------------------------------------------


def _line_of(raw: bytes, offset: int) -> int:
    return raw.count(b"\n", 0, offset) + 1


def _duplicates(header: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    dups: list[str] = []
    for name in header:
        if name in seen and name not in dups:
            dups.append(name)
        seen.add(name)
    return dups


def _missing_column(name: str, found: list[Any], data: DataConfig) -> Problem:
    what = "target column" if name == data.target_column else "required column"
    message = f"the {what} {name!r} is missing; columns found: {[str(c) for c in found]}"
    if len(found) == 1:
        separator = next((sep for sep in (";", "\t", "|") if sep in str(found[0])), None)
        if separator is not None:
            message += f" (the file seems to use {separator!r} as separator; use commas)"
    return Problem(check="required_column", column=name, message=message)


def _example(frame: pd.DataFrame, index: Any, column: str, fallback: Any) -> str:
    """The failing value as it was read (pandera's failure cases may be upcast to float)."""
    try:
        value = frame.at[index, column]
    except (KeyError, ValueError):
        value = fallback
    if hasattr(value, "item"):
        value = value.item()  # numpy scalar -> plain Python, so repr shows 150 not np.int64
    return repr(value)


def _failure_problems(
    errors: pa.errors.SchemaErrors,
    frame: pd.DataFrame,
    schema: pa.DataFrameSchema,
    data: DataConfig,
) -> list[Problem]:
    """Turn pandera failure cases into one Problem per (column, check)."""
    descriptions: dict[tuple[str, str], str] = {}
    for key, column in schema.columns.items():
        for check in column.checks:
            descriptions[(key, str(check.name))] = check.description or str(check.name)

    cases = errors.failure_cases
    problems: list[Problem] = []
    order: list[tuple[str | None, str]] = []
    grouped: dict[tuple[str | None, str], pd.DataFrame] = {}
    for (column, check), group in cases.groupby(
        [cases["column"].astype(object).where(cases["column"].notna(), ""), "check"],
        sort=False,
    ):
        key = (str(column) or None, str(check))
        order.append(key)
        grouped[key] = group

    for column, check in order:
        group = grouped[(column, check)]
        if check == "column_in_dataframe":
            for missing in group["failure_case"].astype(str):
                problems.append(_missing_column(missing, list(frame.columns), data))
            continue
        if column is None:
            problems.append(Problem(check=check, message=f"dataframe check {check!r} failed"))
            continue
        series = frame[column] if column in frame.columns else pd.Series(dtype=object)
        description = descriptions.get((column, check)) or descriptions.get(
            (_ALL_COLUMNS, check), check
        )
        if check == "not_nullable":
            count = int(series.isna().sum())
            rows = [int(i) + 2 for i in group["index"].dropna().head(MAX_EXAMPLES)]
            problems.append(
                Problem(
                    check="not_null",
                    column=column,
                    message=f"{count} empty value(s) in a column that must not be empty",
                    examples=[f"line {r}" for r in rows],
                    count=count,
                )
            )
        elif check == "max_missing_fraction":
            fraction = float(series.isna().mean())
            problems.append(
                Problem(
                    check=check,
                    column=column,
                    message=f"{fraction:.1%} of values are missing; "
                    f"at most {data.max_missing_fraction:.0%} may be",
                    count=int(series.isna().sum()),
                )
            )
        elif check == "target_classes":
            values = sorted({str(v) for v in series.dropna().unique()})
            problems.append(
                Problem(
                    check=check,
                    column=column,
                    message=f"the target has {len(values)} class(es) {values}; "
                    "training needs at least two",
                    examples=values[:MAX_EXAMPLES],
                )
            )
        elif group["index"].notna().any():
            # A per-value check: report how many values fail, with their lines.
            rows = group[group["index"].notna()]
            examples = [
                f"line {int(i) + 2}: {_example(frame, i, column, v)}"
                for i, v in zip(
                    rows["index"].head(MAX_EXAMPLES),
                    rows["failure_case"].head(MAX_EXAMPLES),
                    strict=True,
                )
            ]
            problems.append(
                Problem(
                    check=check,
                    column=column,
                    message=f"{len(rows)} value(s) fail: {description}",
                    examples=examples,
                    count=len(rows),
                )
            )
        else:
            detail = [str(v) for v in group["failure_case"].head(MAX_EXAMPLES)]
            problems.append(
                Problem(
                    check=check,
                    column=column,
                    message=f"column check failed: {description}",
                    examples=[d for d in detail if d not in ("False", "True")],
                )
            )
    return problems


def validate_file(
    path: Path, data: DataConfig, reference: InputSchema | None = None
) -> ValidationResult:
    """Validate one raw CSV file; every problem is reported in the result, none is raised."""
    path = Path(path)

    def fail(problems: list[Problem], sha: str = "", **extra: Any) -> ValidationResult:
        result = ValidationResult(path=path, sha256=sha, ok=False, problems=problems, **extra)
        logger.info("validation failed: %s", result.summary())
        return result

    try:
        raw = read_bounded(path, data.max_file_bytes)
    except FileTooLarge as exc:
        problem = Problem(check="file_too_large", message=str(exc), count=exc.size)
        return fail([problem], file_sha256(path))
    except OSError as exc:
        return fail([Problem(check="readable", message=f"cannot read the file: {exc}")])
    sha = hashlib.sha256(raw).hexdigest()
    if not raw:
        return fail([Problem(check="empty_file", message="the file is empty (0 bytes)")], sha)
    try:
        # utf-8-sig is strict UTF-8 that also drops a leading byte-order mark (Excel writes one).
        text = raw.decode("utf-8-sig", errors="strict")
    except UnicodeDecodeError as exc:
        bad = raw[exc.start : exc.start + 8]
        return fail(
            [
                Problem(
                    check="encoding",
                    message=f"not UTF-8 text: invalid byte(s) at line {_line_of(raw, exc.start)} "
                    f"(byte offset {exc.start}); save the file as UTF-8",
                    examples=[repr(bad)],
                )
            ],
            sha,
        )
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        return fail(
            [
                Problem(
                    check="encoding",
                    message=f"NUL byte at line {line}: this is not a text CSV file",
                )
            ],
            sha,
        )
    if not text.strip():
        return fail([Problem(check="empty_file", message="the file holds only whitespace")], sha)

    problems: list[Problem] = []
    try:
        header = next(csv.reader(io.StringIO(text)))
    except (csv.Error, StopIteration) as exc:
        return fail([Problem(check="csv_parse", message=f"not a readable CSV file: {exc}")], sha)
    duplicates = _duplicates(header)
    if duplicates:
        problems.append(
            Problem(
                check="duplicate_columns",
                column=duplicates[0],
                message=f"column name(s) appear more than once: {duplicates}",
                examples=duplicates[:MAX_EXAMPLES],
            )
        )

    text_columns = {c: str for c in _category_columns(data, reference) if c in header}
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=text_columns, low_memory=False)
    except Exception as exc:  # pandas raises several types for malformed CSV
        message = " ".join(str(exc).split())
        problems.append(Problem(check="csv_parse", message=f"not a readable CSV file: {message}"))
        return fail(problems, sha)

    rows = len(frame)
    columns = [str(c) for c in frame.columns]
    schema = build_schema(data, reference)
    if rows == 0:
        problems.append(
            Problem(check="no_data_rows", message="the file has a header but no data rows")
        )
        for name, column in schema.columns.items():
            if column.required and not column.regex and name not in frame.columns:
                problems.append(_missing_column(name, columns, data))
        return fail(problems, sha, rows=0, columns=columns)
    if rows < data.min_rows:
        problems.append(
            Problem(
                check="min_rows",
                message=f"{rows} data row(s); at least {data.min_rows} are needed",
                count=rows,
            )
        )

    validated: pd.DataFrame | None = None
    try:
        validated = schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as errors:
        problems.extend(_failure_problems(errors, frame, schema, data))
    except Exception as exc:  # a check that cannot run must still end in a report
        logger.exception("schema validation of %s crashed", path)
        problems.append(
            Problem(check="schema_validation", message=f"validation could not run: {exc}")
        )

    if problems:
        return fail(problems, sha, rows=rows, columns=columns)
    result = ValidationResult(
        path=path, sha256=sha, ok=True, rows=rows, columns=columns, frame=validated
    )
    logger.info("validated %s", result.summary())
    return result
