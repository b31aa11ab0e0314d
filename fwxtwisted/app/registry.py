"""Filter discovery (twisted plugins) and the protocol registry keyed by UUID."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from twisted.plugin import getPlugins

from fwxtwisted.interfaces import IFilter, ProtocolDefinition
from fwxtwisted.logs import Logger

log = Logger()


class ProtocolRegistry:
    """Protocols known to the gateway (the SDK's RegisterProtocolForFilter)."""

    def __init__(self) -> None:
        self._byId: dict[uuid.UUID, tuple[ProtocolDefinition, str]] = {}

    def register(self, definition: ProtocolDefinition, filterName: str) -> None:
        """Record that C{filterName} handles C{definition}.

        @raise ValueError: another filter registered the same UUID.
        """
        known = self._byId.get(definition.protocolId)
        if known is not None and known[1] != filterName:
            raise ValueError(
                f"protocol {definition.protocolId} ({definition.name}) is registered by "
                f"filter {known[1]!r} already"
            )
        self._byId[definition.protocolId] = (definition, filterName)

    def lookup(self, protocolId: uuid.UUID) -> ProtocolDefinition | None:
        """The protocol registered under C{protocolId}, if any."""
        entry = self._byId.get(protocolId)
        return entry[0] if entry else None

    def filterFor(self, protocolId: uuid.UUID) -> str | None:
        """The name of the filter that registered C{protocolId}, if any."""
        entry = self._byId.get(protocolId)
        return entry[1] if entry else None


def discoverFilters(
    candidates: Iterable[IFilter] | None = None, registry: ProtocolRegistry | None = None
) -> dict[str, IFilter]:
    """Every filter plugin by name, their protocols registered in C{registry}.

    A second filter with a name already taken is skipped with a log line.
    """
    if candidates is None:
        import twisted.plugins

        candidates = getPlugins(IFilter, twisted.plugins)
    filters: dict[str, IFilter] = {}
    for candidate in candidates:
        name = candidate.name
        if name in filters:
            log.warn("two filters are named {name!r}; keeping the first", name=name)
            continue
        filters[name] = candidate
        if registry is not None:
            for definition in candidate.protocols:
                registry.register(definition, name)
    return filters
