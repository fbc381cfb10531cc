"""Recipes as files: ``hookline export`` / ``hookline import``.

Recipes are matched by inbound token, so a restored server keeps its URLs and the SaaS
tools that post to them keep working. Connections are referenced by name; their secrets are
never exported, so a restore needs the connections to exist (create them in the UI first).
An import is all-or-nothing: every recipe is validated before anything is written.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import recipes as recipes_mod
from .connections import connection_id, references
from .models import Connection, Recipe, RecipeStatus

FORMAT_VERSION = 1
# A recipe file larger than this is refused before it is parsed: a real export of hundreds
# of recipes is well under a megabyte.
MAX_FILE_BYTES = 10 * 1024 * 1024
ALIASES_REFUSED = "YAML aliases (*name) are not allowed in recipe files"


class ImportProblem(ValueError):
    pass


@dataclass
class Imported:
    action: str  # "created" | "updated" | "unchanged"
    recipe: Recipe


def export_all(session: Session) -> dict[str, Any]:
    conns = {c.id: c for c in session.scalars(select(Connection).order_by(Connection.name))}
    out_recipes = []
    for r in session.scalars(select(Recipe).order_by(Recipe.id)):
        d = recipes_mod.current_definition(r)
        for where, part in list(references(d)):  # ids are local to a server: a file uses names
            conn = conns.get(connection_id(part["connection"]))
            part["connection"] = conn.name if conn is not None else None  # never a raw id
            if conn is None and where.startswith("steps."):
                del part["connection"]  # a step without one leaves it out; normalize restores it
        out_recipes.append({"name": r.name, "token": r.token, "status": r.status,
                            "fields": d["fields"], "steps": d["steps"], "settings": d["settings"]})
    return {
        "hookline": FORMAT_VERSION,
        "connections": [{"name": c.name, "kind": c.kind, "settings": c.settings or {}}
                        for c in conns.values()],
        "recipes": out_recipes,
    }


def dumps(data: dict[str, Any], fmt: str = "yaml") -> str:
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    import yaml  # loaded by export and import only, not by a serving process

    # Never anchors/aliases (PyYAML writes them for an object met twice): import refuses them.
    return yaml.dump(data, Dumper=_yaml_classes()[0], sort_keys=False, allow_unicode=True, width=100)


def loads(text: str) -> dict[str, Any]:
    import yaml

    if len(text) > MAX_FILE_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        raise ImportProblem(_too_large())
    loader = _yaml_classes()[1](text)
    try:
        data = loader.get_single_data()  # YAML is a superset of JSON: one parser for both
    except yaml.YAMLError as exc:
        raise ImportProblem(f"not valid YAML or JSON: {exc}") from None
    except RecursionError:
        raise ImportProblem("not a recipe file: nested too deeply") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict) or not isinstance(data.get("recipes"), list):
        raise ImportProblem("expected a mapping with a 'recipes' list (see README: recipe files)")
    if data.get("hookline", FORMAT_VERSION) != FORMAT_VERSION:
        raise ImportProblem(f"unsupported file version {data.get('hookline')!r}")
    return data


def read_limited(stream: BinaryIO, name: str = "file") -> str:
    """The text of a recipe file (UTF-8), refused unread past MAX_FILE_BYTES (so a huge file
    or an endless stream such as /dev/zero never fills memory)."""
    raw = stream.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:
        raise ImportProblem(_too_large(name))
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportProblem(f"{name} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None


def _too_large(name: str = "recipe file") -> str:
    return f"{name} is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB: refused"


_YAML_CLASSES: tuple[type, type] | None = None


def _yaml_classes() -> tuple[type, type]:
    """(Dumper, Loader) for recipe files, built on first use so serving never imports yaml.
    The loader is PyYAML's safe loader refusing aliases: ``*name`` references let a 1 KB
    file expand to gigabytes ("billion laughs") once the definition is copied or serialized."""
    global _YAML_CLASSES
    if _YAML_CLASSES is None:
        import yaml

        class NoAliasDumper(yaml.SafeDumper):
            def ignore_aliases(self, data: Any) -> bool:
                return True

        class NoAliasLoader(yaml.SafeLoader):
            def compose_node(self, parent: Any, index: Any) -> Any:
                if self.check_event(yaml.AliasEvent):
                    mark = self.peek_event().start_mark
                    raise ImportProblem(f"{ALIASES_REFUSED} (line {mark.line + 1}, column {mark.column + 1})")
                return super().compose_node(parent, index)

        _YAML_CLASSES = (NoAliasDumper, NoAliasLoader)
    return _YAML_CLASSES


def import_all(session: Session, data: dict[str, Any]) -> list[Imported]:
    by_name = {c.name: c.id for c in session.scalars(select(Connection))}
    problems: list[str] = []
    prepared = []
    for i, item in enumerate(data["recipes"]):
        label = f"recipes[{i}] ({item.get('name') or 'unnamed'})" if isinstance(item, dict) else f"recipes[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{label}: must be a mapping")
            continue
        token = item.get("token")
        if token is not None and not (isinstance(token, str) and recipes_mod.TOKEN_FORMAT.match(token)):
            problems.append(f"{label}: token must be 22-64 URL-safe characters (at least 128 bits)")
            continue
        raw_steps, raw_settings = item.get("steps") or [], item.get("settings") or {}
        if not isinstance(raw_steps, list) or not all(isinstance(s, dict) for s in raw_steps):
            problems.append(f"{label}: steps must be a list of mappings")
            continue
        if not isinstance(raw_settings, dict):
            problems.append(f"{label}: settings must be a mapping")
            continue
        steps = [dict(step) for step in raw_steps]  # copies: the parsed file is left as read
        settings = {k: dict(v) if isinstance(v, dict) else v for k, v in raw_settings.items()}
        for where, part in references({"steps": steps, "settings": settings}):
            cname = part["connection"]  # every reference (steps, verify, alert…) by name, as exported
            if cname is None:
                continue
            if not isinstance(cname, str) or cname not in by_name:
                problems.append(f"{label}: {where}.connection: no connection named '{cname}' here; "
                                "create it first (secrets are never exported)")
                continue
            part["connection"] = by_name[cname]
        definition = {"fields": item.get("fields") or [], "steps": steps, "settings": settings}
        prepared.append((label, item, token, definition))
    if problems:
        raise ImportProblem("nothing imported:\n  " + "\n  ".join(problems))
    results: list[Imported] = []
    try:
        for label, item, token, definition in prepared:
            results.append(_apply(session, item, token, definition))
    except recipes_mod.RecipeInvalid as exc:
        session.rollback()
        raise ImportProblem(f"nothing imported: {label}: {exc}") from None
    session.commit()
    return results


def _apply(session: Session, item: dict[str, Any], token: str | None, definition: dict[str, Any]) -> Imported:
    existing = recipes_mod.by_token(session, token) if token else None
    paused = item.get("status") == RecipeStatus.PAUSED.value
    if existing is None:
        recipe = recipes_mod.create(session, str(item.get("name") or ""), definition, token=token,
                                    paused=paused, commit=False)
        session.flush()
        return Imported("created", recipe)
    before = (existing.name, existing.current_version, existing.status)
    recipes_mod.update_recipe(session, existing, name=str(item.get("name") or ""), definition=definition,
                              commit=False)
    if existing.is_paused != paused:
        recipes_mod.set_paused(session, existing, paused, "paused in imported file" if paused else None,
                               commit=False)
    after = (existing.name, existing.current_version, existing.status)
    return Imported("updated" if after != before else "unchanged", existing)
