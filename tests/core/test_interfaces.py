"""Every real implementation and every fake provides its interface, so that fake and
real cannot drift apart: verifyObject on objects built by a real Session on loopback."""

from __future__ import annotations

import inspect
import types

import pytest_twisted
import support
from support import LOCAL, Network, within
from twisted.internet import reactor
from twisted.plugin import IPlugin
from zope.interface import Interface
from zope.interface.verify import verifyObject

from fwxtwisted import _values, interfaces
from fwxtwisted.address import Address
from fwxtwisted.filters.forwarding import ForwardingSessionFilter
from fwxtwisted.filters.ftp.control import FTPSessionFilter
from fwxtwisted.filters.ftp.filter import FTPFilter, ftpFilter
from fwxtwisted.filters.tcp import TCPForwardFilter, tcpFilter
from fwxtwisted.interfaces import (
    Connect,
    IConnectionRefuser,
    IDataChannel,
    IDataFilter,
    IDatagramPorts,
    IFilter,
    IFirewallAction,
    IJoin,
    IPrimaryEventsOptional,
    ISession,
    ISessionFilter,
    Listen,
    Transport,
)
from fwxtwisted.permissions.gateway import Gateway
from fwxtwisted.permissions.join import JoinAction
from fwxtwisted.permissions.redirect import TCPRedirectAction
from fwxtwisted.permissions.session import Session
from fwxtwisted.permissions.udp import UDPRedirectAction
from fwxtwisted.relay.datafilter import PassThroughDataFilter
from fwxtwisted.relay.filterchain import ChainLink
from fwxtwisted.relay.linefilter import LineDataFilter
from fwxtwisted.testing import FakeFirewallAction, FakeJoin, FakeSession

net = support.net

UPSTREAM = Address(LOCAL, 9)


def verify(interface: type[Interface], candidate: object) -> None:
    assert verifyObject(interface, candidate), (interface, candidate)


def realSession() -> Session:
    """A Session as the service makes one, its client leg never connected."""
    return Session(Gateway(reactor), Address(LOCAL, 50000), defaultUpstream=UPSTREAM)


@pytest_twisted.ensureDeferred
async def test_real_session_and_its_permissions(net: Network) -> None:
    session = realSession()
    verify(ISession, session)
    here = Address(LOCAL, 0)
    tcp = await within(session.redirectConnections([UPSTREAM], internalAddress=here))
    udp = await within(
        session.redirectConnections([UPSTREAM], internalAddress=here, transport=Transport.UDP)
    )
    join = await within(session.joinConnections(Listen(LOCAL, LOCAL), Connect(UPSTREAM)))
    [tcpAction], [udpAction] = tcp.actions, udp.actions
    assert isinstance(tcpAction, TCPRedirectAction)
    assert isinstance(udpAction, UDPRedirectAction)
    assert isinstance(join, JoinAction)
    verify(IFirewallAction, tcpAction)
    verify(IFirewallAction, udpAction)
    verify(IJoin, join)
    passThrough = PassThroughDataFilter()
    session.attachDataFilter(passThrough)
    assert isinstance(passThrough.channel, ChainLink)
    verify(IDataChannel, passThrough.channel)
    session.close("test over")
    await within(session.whenClosed())


def test_filter_plugins_and_their_session_filters() -> None:
    for plugin in (ftpFilter, tcpFilter):
        verify(IFilter, plugin)
        verify(IPlugin, plugin)
    assert isinstance(ftpFilter, FTPFilter) and isinstance(tcpFilter, TCPForwardFilter)
    verify(IConnectionRefuser, ftpFilter)

    session = realSession()
    session.options = ftpFilter.parseOptions({}, UPSTREAM)
    ftpSession = ftpFilter.attachToSession(session)
    assert isinstance(ftpSession, FTPSessionFilter)
    verify(ISessionFilter, ftpSession)
    verify(IDataFilter, ftpSession)  # the FTP filter is its control connection's data filter

    forwarding = tcpFilter.attachToSession(realSession())
    assert isinstance(forwarding, ForwardingSessionFilter)
    verify(ISessionFilter, forwarding)
    verify(IPrimaryEventsOptional, forwarding)
    assert forwarding.wantsFirewallEvents is False


def test_data_filters() -> None:
    verify(IDataFilter, PassThroughDataFilter())
    verify(IDataFilter, LineDataFilter())


def test_fakes() -> None:
    session = FakeSession(autoGrant=True)
    verify(ISession, session)
    session.attachDataFilter(PassThroughDataFilter())
    verify(IDataChannel, session.dataFilters[0].channel)
    redirection = session.redirectConnections([UPSTREAM])
    granted: list[object] = []
    redirection.addCallback(lambda r: granted.extend(r.actions))
    [action] = granted
    assert isinstance(action, FakeFirewallAction)
    verify(IFirewallAction, action)
    joined: list[object] = []
    session.joinConnections(Listen(LOCAL, LOCAL), Connect(UPSTREAM)).addCallback(joined.append)
    [join] = joined
    assert isinstance(join, FakeJoin)
    verify(IJoin, join)
    verify(IDatagramPorts, session.openDatagramPorts(2, evenBase=True))
    allowed: list[object] = []
    session.allowFutureConnect(Address(LOCAL, 0), UPSTREAM).addCallback(allowed.append)
    [future] = allowed
    assert isinstance(future, FakeFirewallAction)
    verify(IFirewallAction, future)


def test_fake_and_real_session_take_the_same_arguments() -> None:
    """Every ISession method of the fake has the real one's parameters and defaults."""
    for name in ISession.names():
        real = getattr(Session, name, None)
        fake = getattr(FakeSession, name, None)
        if not inspect.isfunction(real):
            continue  # an attribute
        # Parameters and defaults are the contract; a return type may be more precise.
        assert inspect.signature(fake).parameters == inspect.signature(real).parameters, name


def definedIn(module: types.ModuleType) -> set[str]:
    """The public names C{module} defines itself (not what it imports)."""
    names = set()
    for name, value in vars(module).items():
        if name.startswith("_") or inspect.ismodule(value):
            continue
        if isinstance(value, str) and name.isupper():
            # A constant: defined where it is assigned, the private module for a value.
            if module is _values or name not in _values.__all__:
                names.add(name)
            continue
        parts = value.__args__ if isinstance(value, types.UnionType) else (value,)
        if all(getattr(part, "__module__", None) == module.__name__ for part in parts):
            names.add(name)
    return names


def test_value_types_are_public_in_interfaces() -> None:
    """The value types live in the private _values; interfaces re-exports each one, the
    same object, and its __all__ names every public name of both, once."""
    assert sorted(_values.__all__) == sorted(definedIn(_values))
    for name in _values.__all__:
        assert getattr(interfaces, name) is getattr(_values, name), name
    assert len(interfaces.__all__) == len(set(interfaces.__all__))
    assert set(interfaces.__all__) == definedIn(interfaces) | definedIn(_values)
    assert definedIn(interfaces) == {n for n in interfaces.__all__ if n.startswith("I")}
    for name in interfaces.__all__:
        assert getattr(interfaces, name) is not None, name
