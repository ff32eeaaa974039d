"""Evaluation: metrics per task family, the runner over MMRS records, and the report writers."""
