"""``earthgpt weights``: prepare the offline base components, or show what is prepared.

- ``earthgpt weights prepare [--cache DIR] [--force]`` converts the bundled packages once into
  ``<cache>/nano-base`` (about a minute on two cores);
- ``earthgpt weights info [--cache DIR] [--json]`` prints its manifest.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``prepare`` and ``info`` actions."""
    parser.add_argument("action", choices=("prepare", "info"), help="prepare the base, or print its manifest")
    parser.add_argument("--cache", type=Path, default=None,
                        help="cache folder (default: $EARTHGPT_CACHE or ~/.cache/earthgpt)")
    parser.add_argument("--force", action="store_true", help="convert again even when already prepared")
    parser.add_argument("--json", action="store_true", help="info: print the manifest as JSON")


def run(args: argparse.Namespace) -> int:
    """Run the action; returns the exit status."""
    from earthgpt.model import base_cache
    from earthgpt.model.convert_bundled import MissingPackageError

    if args.action == "info":
        try:
            manifest = base_cache.read_manifest(args.cache)
        except FileNotFoundError as error:
            print(error, file=sys.stderr)
            return 1
        print(json.dumps(manifest, indent=2) if args.json else format_manifest(manifest))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    try:
        folder = base_cache.prepare_nano_base(args.cache, force=args.force)
    except MissingPackageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    manifest = base_cache.read_manifest(folder.parent)
    print(f"{folder} ready in {time.perf_counter() - started:.1f} s")
    print(format_manifest(manifest))
    return 0


def format_manifest(manifest: dict) -> str:
    """A short human-readable summary: base id, then one line per component."""
    lines = [f"base_id {manifest['base_id']}"]
    for role, info in manifest["components"].items():
        source = info.get("source", {})
        size = f"{info['size_bytes'] / 1e6:7.1f} MB"
        lines.append(
            f"  {role:<4} {info['name']:<24} {size}  sha256 {info['sha256'][:12]}  "
            f"from {source.get('package', '?')}=={source.get('version', '?')} ({source.get('file', '?')})"
        )
    return "\n".join(lines)
