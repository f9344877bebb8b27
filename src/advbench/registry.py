"""A small name → class registry for pluggable parts (sources now; generators, victims later).

Like timm's and open_clip's model registries: a part registers itself under a name with a
decorator, and configs refer to it by that name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind of part; unknown names fail listing the known ones."""

    def __init__(self, what: str):
        self.what = what
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.what} {name!r} is already registered")
            self._entries[name] = entry
            return entry

        return add

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise KeyError(f"unknown {self.what} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[tuple[str, T]]:
        return iter(sorted(self._entries.items()))

    def config_spec(self) -> Any:
        """The pydantic type of a config block naming one entry by ``kind``: the union of the
        entries' ``Config`` classes, told apart by their ``kind``."""
        from typing import Annotated, Union

        from pydantic import Field

        configs = tuple(entry.Config for _, entry in self)  # type: ignore[attr-defined]
        return Annotated[Union[configs], Field(discriminator="kind")]  # noqa: UP007
