"""A per-database cache of recipe definitions. Versions are immutable, so a cached version is
never stale; the cache lives on the Core so two databases in one process never mix."""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from .models import RecipeVersion


class DefinitionCache:
    def __init__(self, size: int = 512) -> None:
        self._items: OrderedDict[tuple[int, int], dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._size = size

    def peek(self, recipe_id: int, version: int) -> dict[str, Any] | None:
        """The cached definition, without touching the database."""
        with self._lock:
            return self._items.get((recipe_id, version))

    def get(self, session: Session | Connection, recipe_id: int | None, version: int) -> dict[str, Any] | None:
        if recipe_id is None:
            return None
        key = (recipe_id, version)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        d = session.scalar(select(RecipeVersion.definition).where(
            RecipeVersion.recipe_id == recipe_id, RecipeVersion.version == version))
        if d is not None:
            with self._lock:
                self._items[key] = d
                while len(self._items) > self._size:
                    self._items.popitem(last=False)
        return d
