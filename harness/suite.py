"""The suite file: a strict schema, named profiles and command-line overrides.

A suite YAML holds a base configuration and a `profiles` mapping of named overlays. The
configuration a run uses is: base, deep-merged with the chosen profile, then `--set key=value`
overrides (command line over profile over base). Every profile is validated whenever the suite
is loaded, so a typo in the `gpu` profile is caught on a laptop too.

`include: FILE` merges shared settings under a suite (see `read_with_includes`). What each
section may say is harness.schema; every problem here is one UserError naming file and key.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from harness.errors import UserError
from harness.schema import DEFAULT_PROFILE, Suite, describe_error, KeyedError, walk_schema, name_problem


def load_suite(path: str | Path, profile: str = DEFAULT_PROFILE, overrides: list[str] = ()) -> Suite:
    """Read, merge and validate a suite; every problem is one UserError naming file and key."""
    path = Path(path)
    layers = read_with_includes(path)
    raw = functools.reduce(lambda base, layer: deep_merge(base, layer[1]), reversed(layers), {})
    profiles = raw.pop("profiles", None) or {}
    if not isinstance(profiles, dict):
        raise UserError("expected a mapping of profile name -> overrides", where=f"{path}: profiles")
    if "name" not in raw:
        _check_default_name(path)
        raw["name"] = path.stem
    for name in [DEFAULT_PROFILE, *profiles]:  # a typo in any profile is an error everywhere
        _resolve(layers, raw, profiles, name, [])
    if profile != DEFAULT_PROFILE and profile not in profiles:
        known = ", ".join([DEFAULT_PROFILE, *profiles])
        raise UserError(f"no profile '{profile}' in the suite (profiles: {known})", where=str(path))
    return _resolve(layers, raw, profiles, profile, list(overrides))


def read_with_includes(path: Path, chain: tuple[Path, ...] = ()) -> list[tuple[Path, dict]]:
    """The suite file and the files it includes, nearest first: [(file, mapping), ...].

    `include: FILE` (or a list of files), relative to the including file, names mappings the
    file is merged onto: the including file wins, and of several includes the later one wins.
    Includes may include; a file that includes itself, directly or not, is an error."""
    raw = _read_yaml(path)
    targets = raw.pop("include", None)
    if targets is None:
        return [(path, raw)]
    if isinstance(targets, str):
        targets = [targets]
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise UserError("expected a file name or a list of file names", where=f"{path}: include")
    layers = [(path, raw)]
    for target in reversed(targets):
        layers += read_with_includes(_included(path, target, (*chain, path)), (*chain, path))
    return layers


def _included(path: Path, target: str, chain: tuple[Path, ...]) -> Path:
    file = (path.parent / target).resolve()
    if file in {p.resolve() for p in chain}:
        cycle = " -> ".join(str(p) for p in (*chain, file))
        raise UserError(f"include cycle: {cycle}", where=f"{path}: include")
    if not file.is_file():
        raise UserError(f"no such file to include: {file}", where=f"{path}: include")
    return file


def _check_default_name(path: Path) -> None:
    if problem := name_problem(path.stem):
        raise UserError(f"the suite has no `name`, and its file's name is no suite name: {problem}; "
                        "set `name:` in the suite, or rename the file", where=f"{path}: name")


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise UserError("no such suite file", where=str(path))
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"not valid YAML: {e}", where=str(path)) from None
    if not isinstance(raw, dict):
        raise UserError("expected a mapping at the top of the suite", where=str(path))
    return raw


def _resolve(layers: list[tuple[Path, dict]], raw: dict, profiles: dict, profile: str,
             overrides: list[str]) -> Suite:
    path = layers[0][0]
    overlay = {} if profile == DEFAULT_PROFILE else profiles.get(profile) or {}
    if not isinstance(overlay, dict):
        raise UserError("expected a mapping of overrides", where=f"{path}: profiles.{profile}")
    merged = deep_merge(raw, overlay)
    set_paths = [apply_override(merged, item) for item in overrides]
    merged["profile"] = profile
    try:
        return Suite.model_validate(merged)
    except ValidationError as e:
        raise _user_error(layers, e, profile, set_paths) from None


def deep_merge(base: dict, overlay: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_override(config: dict, item: str) -> tuple[str, ...]:
    """Apply one `a.b.c=value` (value parsed as YAML) in place; return the key path."""
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise UserError(f"expected key=value, got '{item}'", where="--set")
    keys = tuple(key.split("."))
    node = config
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise UserError(f"'{k}' is not a section", where=f"--set {key}")
    try:
        node[keys[-1]] = yaml.safe_load(text)
    except yaml.YAMLError as e:  # also a tag that safe_load refuses: !!python/object, ...
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"'{text}' is not a plain YAML value ({problem}); give a number, text, list "
                        "or mapping, and quote text that starts with '!'", where=f"--set {key}") from None
    return keys


# ---------------------------------------------------------------------------------------------
# Error messages


def _user_error(layers: list[tuple[Path, dict]], error: ValidationError, profile: str,
                set_paths: list[tuple[str, ...]]) -> UserError:
    err = error.errors()[0]
    ctx_error = (err.get("ctx") or {}).get("error")
    if isinstance(ctx_error, KeyedError):
        loc, message = ctx_error.loc, ctx_error.message
    else:
        loc, message = walk_schema(Suite, tuple(err["loc"]))[1], describe_error(err)
    key = _dotted(loc)
    if any(loc[:len(p)] == p or p[:len(loc)] == loc for p in set_paths):
        where = f"--set {key}"
    else:
        where = _origin(layers, loc, profile)
    more = len(error.errors()) - 1
    return UserError(message + (f" (and {more} more problem{'s' * (more > 1)})" if more else ""),
                     where=where)


def _origin(layers: list[tuple[Path, dict]], loc: tuple, profile: str) -> str:
    """The file and key that set `loc`: a profile's overlay first, then the suite file, then
    the files it includes (nearest first); the suite file itself when no file sets it."""
    key = _dotted(loc)
    if profile != DEFAULT_PROFILE:
        for file, raw in layers:
            if _has_path(raw, ("profiles", profile, *loc)):
                return f"{file}: profiles.{profile}.{key}"
    for file, raw in layers:
        if key and _has_path(raw, loc):
            return f"{file}: {key}"
    path = layers[0][0]
    return f"{path}: {key}" if key else str(path)


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _has_path(tree: Any, loc: tuple) -> bool:
    for part in loc:
        if isinstance(part, int) and isinstance(tree, list) and part < len(tree):
            tree = tree[part]
        elif isinstance(tree, dict) and part in tree:
            tree = tree[part]
        else:
            return False
    return True
