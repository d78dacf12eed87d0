"""Building a :class:`RunConfig`: defaults < YAML file < dotted overrides, checked by pydantic.

The tree of plain values (the defaults as a dict, the file merged over them, then the
``section.field`` overrides) is validated in pydantic's strict JSON mode: ints stay ints (no
``"5"`` or ``5.0`` for an int, no ``true`` for a number), ints are accepted for floats, unknown
keys are errors, and nested sections become their dataclasses. The first error becomes one
:class:`ConfigError` line naming the dotted field; then ``validate()`` checks the ranges.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, Iterator, Literal, Optional, TypeVar, Union

import yaml
from pydantic import TypeAdapter, ValidationError

from plabel.config.schema import ConfigError, RunConfig

T = TypeVar("T")


class Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 booleans: only true/false (any case) are booleans.

    YAML 1.1 also reads yes/no/on/off as booleans, which turned the documented
    ``train.mixed_precision: no`` into False.
    """


Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _first in "tTfF":
    Yaml12Loader.add_implicit_resolver(
        "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list(_first)
    )


def parse_yaml(text: str) -> Any:
    """YAML text with YAML 1.2 booleans (see :class:`Yaml12Loader`)."""
    return yaml.load(text, Loader=Yaml12Loader)  # noqa: S506 - a SafeLoader subclass


def parse_value(text: str) -> Any:
    """Command-line values are YAML scalars/lists: ``5``, ``0.1``, ``true``, ``[20, 40]``, ``null``."""
    try:
        return parse_yaml(text)
    except yaml.YAMLError:
        return text



def load_config(path: Optional[str | Path], overrides: dict[str, Any] | None = None) -> RunConfig:
    """Build the run config: defaults, then the YAML file at ``path``, then dotted ``overrides``."""
    tree: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"--config: file {str(p)!r} does not exist; pass a YAML file such as configs/default.yaml")
        try:
            loaded = parse_yaml(p.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"--config: {p} is not valid YAML ({str(e).splitlines()[0]})") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"--config: {p} must hold a mapping of config sections")
        tree = loaded
    # What the user chose: the file's names, unless the file only spells out the defaults
    # (configs/default.yaml: a command line naming it still takes whatever plabel's defaults are).
    given = _names(tree) if tree and not _spells_defaults(tree) else set()
    command_line: dict[str, Any] = {}
    for dotted, value in (overrides or {}).items():
        _set_dotted(tree, dotted, value)
        _set_dotted(command_line, dotted, value)
    cfg = config_from_dict(tree)
    cfg.given = frozenset(given | _names(command_line))
    return cfg


def _spells_defaults(tree: dict[str, Any]) -> bool:
    try:
        return config_from_dict(copy.deepcopy(tree)) == RunConfig()
    except ConfigError:  # invalid alone (the command line may mend it): not the defaults
        return False


def _names(tree: dict[str, Any]) -> set[str]:
    """The dotted field names a (partial) tree sets, aliased sections under their own names."""
    return set(flatten(apply_aliases(copy.deepcopy(tree))))


# Other names users may give a section: data.labeled is data.train (the labeled set's source).
SECTION_ALIASES = {"data.labeled": "data.train"}


def apply_aliases(tree: dict[str, Any]) -> dict[str, Any]:
    """``tree`` with aliased sections under their own names; giving both spellings is an error."""
    for alias, name in SECTION_ALIASES.items():
        section, alias_key = alias.split(".")
        node = tree.get(section)
        if not isinstance(node, dict) or alias_key not in node:
            continue
        key = name.split(".")[1]
        value = node.pop(alias_key)
        if key in node:
            clash = sorted(set(value) & set(node[key])) if isinstance(value, dict) and isinstance(node[key], dict) else [""]
            if clash:
                raise ConfigError(f"{alias}: the same section as {name}; give {alias}.{clash[0] or '...'} or {name}.{clash[0] or '...'}, not both")
            node[key] = {**node[key], **value}
        else:
            node[key] = value
    return tree


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Validate a (partial) tree of plain values over the defaults; also rebuilds a saved config."""
    cfg = check_types(RunConfig, _merge(RunConfig().to_dict(), apply_aliases(data), ""))
    cfg.validate()
    return cfg


def check_types(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """``data`` (every field of the dataclass ``cls``) as a ``cls``, types checked strictly.

    Errors name the field as ``<prefix><dotted name>``; ranges are ``validate()``'s job.
    """
    try:
        # default=str: YAML dates and the like arrive as text, as a string field would want them.
        return TypeAdapter(cls).validate_json(json.dumps(data, default=str), strict=True)
    except ValidationError as e:
        raise ConfigError(prefix + _one_line(e.errors()[0], cls)) from None


def _merge(base: dict[str, Any], update: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``update`` over ``base``; sections merge field by field, unknown keys are kept (to fail)."""
    out = dict(base)
    for key, value in update.items():
        name = f"{prefix}{key}"
        if isinstance(out.get(key), dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{name}: expected a mapping of {key} fields, got {value!r}")
            out[key] = _merge(out[key], value, name + ".")
        else:
            out[key] = value
    return out


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{dotted}: {p} is not a section")
        node = nxt
    node[parts[-1]] = value


def _one_line(error: Any, cls: Any) -> str:
    """A pydantic error about a ``cls`` as ``dotted.field: what is wrong``, in plabel's words."""
    names: list[str] = []
    annotation: Any = None
    unknown = error["type"] in ("unexpected_keyword_argument", "extra_forbidden")
    for part in error["loc"]:
        if isinstance(part, int):
            names[-1] += f"[{part}]"
            continue
        hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
        if part not in hints:
            if unknown:
                names.append(str(part))
            break  # otherwise the member of a Union pydantic tried ("float", "list[float]")
        names.append(part)
        annotation = cls = hints[part]
    name = ".".join(names)
    if unknown:
        known = ", ".join(sorted(f.name for f in dataclasses.fields(cls)))
        return f"{name}: unknown config key; known keys here: {known}"
    if dataclasses.is_dataclass(annotation):
        return f"{name}: expected a mapping of {annotation.__name__} fields, got {error['input']!r}"
    return f"{name}: expected {type_name(annotation)}, got {error['input']!r}"


def type_name(tp: Any) -> str:
    """An annotation in words: ``int``, ``one of 'no', 'bf16'``, ``float or list of float``."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def iter_fields(section: Any = None, prefix: str = "") -> Iterator[tuple[str, Any, Any, str]]:
    """(dotted name, annotation, default, help) for every leaf field of ``section`` (an instance).

    Defaults come from the instance, so a nested section built with its own defaults (the
    test source is ``holdout``/``test``) shows those, not the class's.
    """
    section = RunConfig() if section is None else section
    hints = typing.get_type_hints(type(section))
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            yield from iter_fields(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", hints[f.name], value, f.metadata.get("help", "")


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def diff_configs(a: dict[str, Any], b: dict[str, Any], ignore: tuple[str, ...] = ()) -> list[str]:
    """Dotted names whose values differ between two resolved configs."""
    fa, fb = flatten(a), flatten(b)
    keys = sorted(set(fa) | set(fb))
    return [k for k in keys if k not in ignore and fa.get(k) != fb.get(k)]
