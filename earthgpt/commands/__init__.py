"""Sub-commands of the ``earthgpt`` CLI: one module each, exposing ``add_arguments`` and ``run``."""
