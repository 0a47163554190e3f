"""One dynamic partition per raw CSV file, keyed by its file name in `data/raw/`."""

from __future__ import annotations

import dagster as dg

raw_files = dg.DynamicPartitionsDefinition(name="raw_files")
