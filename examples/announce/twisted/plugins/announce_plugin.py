"""Exposes the announce example filter to twisted.plugin, as a third-party package would."""

from announce_filter import AnnounceFilter

#: twisted.plugin finds module-level objects providing IPlugin; fwx then picks out IFilter.
announce = AnnounceFilter()
