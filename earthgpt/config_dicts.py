"""Config dicts: typed dataclasses built from plain nested dicts, and nested dicts merged.

Used by the model config (``earthgpt/config.py``: checkpoints' ``config.json``) and the training
config (``train/config.py``: YAML plus ``key=value`` overrides; ``train/build.py``: a preset plus
``model.config``). Every error names the dotted key at fault (``optim.lrr``, ``model.config.llm.heads``)
and, for an unknown key, the keys known where it was found.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from collections.abc import Collection, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def dataclass_from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """An instance of the dataclass ``cls`` from a nested dict.

    Fields whose type is a dataclass are built recursively; every other value is checked against its
    annotation (ints become floats where a float is expected, numbers become strings where a string
    is). Unknown keys, values of the wrong type and non-mappings raise ValueError naming the dotted
    key, prefixed with ``where``.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known, key=str)  # YAML keys may be numbers or null
    if unknown:
        raise ValueError(_unknown_keys(where, unknown, known))
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = dataclass_from_dict(hint, value, _dotted(where, name))
        else:
            kwargs[name] = _convert(value, hint, _dotted(where, name))
    return cls(**kwargs)


def merge_dicts(
    base: Mapping[str, Any],
    extra: Mapping[str, Any],
    *,
    where: str = "",
    strict: bool = False,
    replace: Collection[str] = (),
) -> dict[str, Any]:
    """``extra`` laid over ``base`` (a new dict; neither is changed), nested dicts merged key by key.

    ``strict``: every key of ``extra`` must exist in ``base``; an unknown one raises ValueError naming
    it (dotted, prefixed with ``where``) and the keys known there. Keys in ``replace`` take
    ``extra``'s value whole even when both values are dicts (settings whose value is a mapping, not
    sections of the config).
    """
    out = dict(base)
    for key, value in extra.items():
        path = _dotted(where, key)
        if strict and key not in out:
            raise ValueError(_unknown_keys(where, [key], out))
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) and key not in replace:
            out[key] = merge_dicts(out[key], value, where=path, strict=strict, replace=replace)
        else:
            out[key] = value
    return out


def _dotted(where: str, key: str) -> str:
    return f"{where}.{key}" if where else str(key)


def _unknown_keys(where: str, unknown: list[str], known: Collection[str]) -> str:
    return (
        f"unknown key(s) {[_dotted(where, k) for k in unknown]}; known in "
        f"{where or 'the top level'}: {sorted(known)}"
    )


def _convert(value: Any, annotation: Any, key: str) -> Any:
    """``value`` checked (and, for numbers, converted) against a type annotation."""
    if annotation is Any:
        return value
    origin = typing.get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _convert(value, option, key)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError(errors[0])
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{key}: expected a list, got {value!r}")
        (item,) = typing.get_args(annotation)
        return [_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{key}: expected a mapping, got {value!r}")
        _, item = typing.get_args(annotation)
        return {str(k): _convert(v, item, f"{key}.{k}") for k, v in value.items()}
    if annotation is float and isinstance(value, int | float) and not isinstance(value, bool):
        if isinstance(value, int) and abs(value) > sys.float_info.max:
            raise ValueError(f"{key}: expected float, got an integer too large for one")
        return float(value)
    if annotation is str and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if annotation in (int, str, bool) and type(value) is annotation:
        return value
    raise ValueError(f"{key}: expected {getattr(annotation, '__name__', annotation)}, got {value!r}")
