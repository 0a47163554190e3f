"""Typed Dagster resources for the lifecycle."""

from resources.lifecycle import LifecycleResource

__all__ = ["LifecycleResource"]
