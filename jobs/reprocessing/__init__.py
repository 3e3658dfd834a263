"""Reprocessing: which results are outdated (selection), runs and their entries (SQL), the reprocessor."""
