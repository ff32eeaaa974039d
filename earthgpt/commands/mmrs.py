"""``earthgpt mmrs build``: convert source datasets into the MMRS unified instruction set.

    earthgpt mmrs build --source KIND=PATH [--source KIND=PATH …] [--option NAME.key=value …] --out DIR
    earthgpt mmrs build --all-shared DATA_DIR --out DIR
    earthgpt mmrs build --recipe RECIPE.yaml [--data-dir DIR] --out DIR
    earthgpt mmrs kinds

``NAME`` in ``--option`` is a source's kind (the option applies to every source of that kind) or
its root name (the folder name: applies to that source only). Writes ``DIR/<split>.jsonl``,
``DIR/card.json`` and ``DIR/card.md``; see docs/MMRS.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from earthgpt.data.builder import SourceSpec, build
from earthgpt.data.recipes import SHARED_RECIPE, load_recipe, specs_from_recipe
from earthgpt.data.registry import ALIASES, CONVERTERS
from earthgpt.data.sources import COMMON_OPTIONS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``build`` and ``kinds`` sub-commands."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="build an MMRS set from source datasets")
    b.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="KIND=PATH",
        help=f"a source to convert; KIND one of {', '.join([*CONVERTERS, *ALIASES])} (repeatable)",
    )
    b.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME.key=value",
        help="a converter option for the sources of kind NAME or with root NAME (repeatable)",
    )
    b.add_argument(
        "--all-shared",
        type=Path,
        metavar="DATA_DIR",
        help="build every labelled dataset of the project's data folder (built-in recipe)",
    )
    b.add_argument("--recipe", type=Path, help="a YAML recipe file (sources: [{kind, path, options}])")
    b.add_argument(
        "--data-dir", type=Path, default=Path("."), help="folder the recipe's relative paths are in"
    )
    b.add_argument("--out", type=Path, required=True, help="output folder")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    sub.add_parser("kinds", help="list the source kinds and their options")


def _parse_options(values: list[str]) -> list[tuple[str, str, str]]:
    parsed = []
    for value in values:
        name_key, sep, option_value = value.partition("=")
        name, dot, key = name_key.rpartition(".")
        if not sep or not dot or not name or not key:
            raise ValueError(f"--option expects NAME.key=value, got {value!r}")
        parsed.append((name, key, option_value))
    return parsed


def _specs(args: argparse.Namespace) -> list[SourceSpec]:
    """Source specs from --source / --option / --all-shared / --recipe."""
    specs: list[SourceSpec] = []
    if args.all_shared is not None:
        specs += specs_from_recipe(SHARED_RECIPE, args.all_shared)
    if args.recipe is not None:
        specs += specs_from_recipe(load_recipe(args.recipe), args.data_dir)
    for value in args.source:
        kind, sep, path = value.partition("=")
        if not sep or not kind or not path:
            raise ValueError(f"--source expects KIND=PATH, got {value!r}")
        specs.append(SourceSpec(kind, Path(path)))
    options = _parse_options(args.option)
    used = set()
    result = []
    for spec in specs:
        own = dict(spec.options)
        root = spec.path.resolve().name if spec.path.is_dir() else spec.path.resolve().parent.name
        kind = ALIASES.get(spec.kind, spec.kind)
        for index, (name, key, value) in enumerate(options):
            if ALIASES.get(name, name) == kind or name == root:
                own[key] = value
                used.add(index)
        result.append(SourceSpec(spec.kind, spec.path, tuple(sorted(own.items()))))
    unused = [f"{n}.{k}" for i, (n, k, _) in enumerate(options) if i not in used]
    if unused:
        raise ValueError(f"--option names no source kind or root: {', '.join(unused)}")
    return result


def _print_kinds() -> None:
    for converter in CONVERTERS.values():
        print(f"{converter.kind}: {converter.description}")
        for key, text in converter.options.items():
            print(f"    {key}: {text}")
    print("options of every kind:")
    for key, text in COMMON_OPTIONS.items():
        print(f"    {key}: {text}")


def run(args: argparse.Namespace) -> int:
    """Run the chosen action; 2 on bad arguments, 0 on success."""
    if args.action == "kinds":
        _print_kinds()
        return 0
    try:
        card = build(_specs(args), args.out, progress=not args.no_progress)
    except ValueError as err:
        print(f"earthgpt mmrs build: {err}", file=sys.stderr)
        return 2
    totals = card["totals"]
    print(
        f"{totals['records']} records, {totals['turns']} turns ({totals['generated_turns']} generated), "
        f"{totals['skipped']} skipped → {args.out}"
    )
    for task, row in card["by_task"].items():
        print(f"  {task}: {row.get('records', 0)} records, {row.get('turns', 0)} turns")
    for row in card["skipped"]:
        print(f"  skipped {row['count']} ({row['source']}): {row['reason']}, e.g. {row['examples'][0]}")
    return 0
