"""Every zope interface of fwxtwisted, and the value types they speak in.

The shapes follow the ISA Server 2000 application-filter SDK (IFWXFilter, IFWXSession,
IFWXSessionFilter, IFWXFirewallAction, IFWXDataFilter), translated into Twisted idiom:
Deferreds instead of completion callbacks, C{Address} values instead of sockaddrs.
The value types (enums, frozen dataclasses) live in the private C{fwxtwisted._values}
and are public here, the same objects (asyncio's pattern: C{import *} and C{__all__}).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence

from twisted.internet.defer import Deferred
from twisted.plugin import IPlugin
from twisted.python import usage
from zope.interface import Attribute, Interface

from fwxtwisted import _values
from fwxtwisted._values import *
from fwxtwisted.address import Address

__all__ = [
    "IConnectionRefuser",
    "IDataChannel",
    "IDataFilter",
    "IDatagramPorts",
    "IFilter",
    "IFirewallAction",
    "IJoin",
    "IPrimaryEventsOptional",
    "ISession",
    "ISessionFilter",
    "ITransparentFilter",
    "IUDPRedirect",
]
__all__ += _values.__all__


class IFirewallAction(Interface):
    """A granted permission: a listener (TCP) or a datagram mapping (UDP) (IFWXFirewallAction)."""

    transport = Attribute("L{Transport} of the permission.")
    internalAddress = Attribute("L{Address} the listener is bound on: where the peer connects.")
    connectAddress = Attribute("L{Address} the gateway connects (or sends) to.")
    externalAddress = Attribute("IP (str) the outbound leg is bound to.")
    expectedPeer = Attribute("IP (str) the only peer the listener accepts.")
    flags = Attribute("L{RedirectFlags} the permission was granted with.")
    context = Attribute("The filter's context object, handed back in every notification.")
    state = Attribute("L{ActionState}: listening, used, expired or cancelled.")
    connectionCount = Attribute("How many connections (or UDP mappings) the permission took.")

    def cancel() -> None:
        """Withdraw the permission: close its listener and abort the connections it owns.

        Idempotent: cancelling twice, or after expiry, does nothing more.
        """

    def whenFinished() -> Deferred[ActionState]:
        """A Deferred that fires with the final state once the listener is closed and every
        connection the permission owns is over."""


class IUDPRedirect(IFirewallAction):
    """A UDP permission made by L{ISession.redirectConnections} with C{Transport.UDP}.

    Each mapping's end is a CONNECTION_TERMINATING notification whose L{ByteCounts}
    has the bytes from the peer (C{fromClient}) and from the connect address
    (C{fromServer}), as for TCP.
    """

    datagramCounts = Attribute(
        "L{DatagramCounts}: packets and bytes each way and dropped datagrams, summed over "
        "every mapping the permission made (for a log line at its end)."
    )
    knownPeer = Attribute(
        "L{Address} the permission was given in C{peerAddresses} (its only peer), or None."
    )


class IDatagramPorts(Interface):
    """C{count} UDP sockets on consecutive ports of one IP (L{ISession.openDatagramPorts}),
    bound before the far side is known: a filter's own (RTP inside RTSP's interleaved
    frames), or the sockets a UDP redirect sends from (C{outboundPorts}).

    Like an L{IFirewallAction}: C{cancel()} is idempotent, the session cancels it at its
    close, C{whenFinished()} fires once every port is back in the pool.  Socket i takes
    a datagram only from its L{expect}ed peer (IP and port; else any port of
    C{expectedIP}) and only once it has an owner (an adopting redirect, else
    C{onDatagram}); anything else is dropped and counted, logged at debug only.
    """

    address = Attribute("L{Address} of the first socket; socket i is on port + i.")
    count = Attribute("How many sockets (int).")
    expectedIP = Attribute("IP (str) accepted on a socket with no L{expect}ed peer.")
    state = Attribute(
        "L{ActionState}: LISTENING while open; CANCELLED once cancelled (USED when the "
        "redirects that adopted every socket released them)."
    )
    dropped = Attribute("Datagrams dropped on all sockets so far (int).")
    onDatagram = Attribute(
        "C{callable(index, datagram, source)}, set by the owner, for each datagram accepted "
        "on a socket no redirect adopted (None: they are dropped and counted)."
    )

    def addressOf(index: int) -> Address:
        """The L{Address} of socket C{index}."""

    def expect(index: int, peer: Address | None) -> None:
        """Accept datagrams on socket C{index} from C{peer} (IP and port) only, replacing
        the previous one; None goes back to any port of C{expectedIP}."""

    def send(index: int, datagram: bytes, to: Address) -> None:
        """Send C{datagram} from socket C{index} to C{to} (nothing once it is closed)."""

    def countsOf(index: int) -> SocketCounts:
        """Packets and bytes socket C{index} accepted and sent, and what it dropped."""

    def cancel() -> None:
        """Close every socket and return the ports to the pool; a redirect that adopted
        one of them is cancelled too. Idempotent."""

    def whenFinished() -> Deferred[ActionState]:
        """Fires with the final state once every socket is closed."""


class IJoin(IFirewallAction):
    """The permission made by L{ISession.joinConnections}."""

    listeningAddresses = Attribute(
        "Dict from side ('client' or 'server' L{fwxtwisted.relay.relay.Side}) to the L{Address} "
        "bound for each accepted leg."
    )


class IDataChannel(Interface):
    """What a data filter writes to: the next stage of its connection's filter chain."""

    def write(direction: Direction, data: bytes) -> None:
        """Pass C{data} on in C{direction} (toward the server for CLIENT_TO_SERVER)."""

    def writeEOF(direction: Direction) -> None:
        """Pass a half-close on: no more bytes will follow in C{direction}."""

    def close(reason: str) -> None:
        """Abort the whole connection (both legs), logging C{reason}."""

    def pauseReading(direction: Direction) -> None:
        """Stop reading from the peer that sends C{direction} (flow control: the
        filter holds enough of its bytes); idempotent."""

    def resumeReading(direction: Direction) -> None:
        """Withdraw this filter's L{pauseReading}; the peer is read again once nothing
        else holds it (a backed-up write buffer, another filter)."""

    def writable(direction: Direction) -> bool:
        """False while what was written in C{direction} waits in its peer's write
        buffer past the high-water mark: a filter that writes of its own accord (not
        in answer to what it read) drops or holds rather than piles up."""


class IDataFilter(Interface):
    """Sees, and may rewrite, the bytes of one connection each way (IFWXDataFilter).

    Attaching a data filter forces the connection onto the user-mode relay.
    """

    def attached(channel: IDataChannel) -> None:
        """The filter is in the chain; it writes everything it passes on to C{channel}."""

    def dataReceived(direction: Direction, data: bytes) -> None:
        """Bytes arrived from the previous stage; the filter writes what it passes on."""

    def eofReceived(direction: Direction) -> None:
        """The previous stage half-closed C{direction}; the filter flushes and passes it on."""

    def detached() -> None:
        """The connection is over; release what the filter holds."""


class ISessionFilter(Interface):
    """The per-session half of a filter (IFWXSessionFilter): one per primary connection."""

    def sessionStarted() -> None:
        """The primary client leg is up.

        The filter now calls L{ISession.connectUpstream} (at once, or later: an explicit
        proxy first reads the login) or L{ISession.close}.
        """

    def firewallEvent(notification: FirewallNotification) -> None:
        """Something happened to the primary connection or to one of the session's
        permissions."""

    def detach() -> None:
        """The session is over; every permission has been cancelled."""


class IPrimaryEventsOptional(ISessionFilter):
    """Optional for a session filter: it may decline the primary connection's events
    (apart, so most session filters need not define it: the session reads
    C{getattr(sessionFilter, "wantsFirewallEvents", True)} once, when attached)."""

    wantsFirewallEvents = Attribute(
        "bool, read once when the session filter is attached. False: the session builds "
        "no notification with action None (CONNECT_TCP, LEG_CLOSED, "
        "CONNECTION_TERMINATING) for this filter; a plain forward saves their cost. "
        "CONNECT_FAILED and GATEWAY_SHUTDOWN, and every event of a permission, are still "
        "delivered."
    )


class IConnectionRefuser(Interface):
    """Optional for a filter plugin (next to L{IFilter}): what to tell a client refused
    before its session starts (C{max_sessions} or C{max_sessions_per_ip} reached).  A
    plugin without it (C{IConnectionRefuser(plugin, None)} is None) says nothing."""

    def refusalMessage(reason: str) -> bytes:
        """Bytes to send before closing (e.g. an FTP 421 reply), or b"" for none."""


class ISession(Interface):
    """One primary connection through the gateway (IFWXSession)."""

    sessionId = Attribute("A short unique string naming the session in logs.")
    clientAddress = Attribute("L{Address} of the client of the primary connection.")
    internalAddress = Attribute(
        "L{Address} where the gateway accepted the client (client-facing). Read from the "
        "socket the first time it is asked: None before the client connection is up, and "
        "None after it ended if it was never asked while it was up."
    )
    externalAddress = Attribute(
        "IP (str or None) every outbound leg of this session leaves from. Taken from the "
        "external address pool; None until the upstream is connected when no pool is set, "
        "then the primary's own source IP."
    )
    serverAddress = Attribute("L{Address} of the upstream once connected, else None.")
    defaultUpstream = Attribute("L{Address} configured for the listener, or None.")
    options = Attribute("The listener's options, as parsed by L{IFilter.parseOptions}.")
    closed = Attribute("True once the session is over.")
    clock = Attribute("C{IReactorTime} for the filter's own timers (injected; fake in tests).")

    def resolveHost(host: str) -> Deferred[str]:
        """The IP of C{host} (an IP literal comes back normalized, a name is resolved).

        The Deferred fails with C{DNSLookupError} when a name does not resolve.
        """

    def connectUpstream(address: Address | None = None) -> Deferred[Address]:
        """Connect the primary's server leg, from the session's external address.

        @param address: where to connect; the listener's default upstream when None.
        @return: a Deferred firing with the upstream address once connected.
        @raise ValueError: (synchronously) no address and no default upstream.
        The Deferred fails with C{FWXError} (its message says why: refused, no
        route, ...) or C{UpstreamTimeout}; cancelling it stops the connect (it then
        fails with C{SessionClosed}).
        """

    def attachDataFilter(dataFilter: IDataFilter, priority: int = 0) -> None:
        """Insert a data filter on the primary connection; lower priorities see client
        bytes first (and server bytes last)."""

    def redirectConnections(
        connectAddresses: Sequence[Address],
        internalAddress: Address | None = None,
        proxyExternalAddress: str | None = None,
        transport: Transport = Transport.TCP,
        flags: RedirectFlags = RedirectFlags.TIMEOUT,
        protocolId: uuid.UUID | None = None,
        sessionFilter: ISessionFilter | None = None,
        context: object = None,
        expectedPeer: str | None = None,
        portRange: tuple[int, int] | None = None,
        tls: Mapping[Side, LegTLS] | None = None,
        dataFilterFactory: Callable[[], Sequence[IDataFilter]] | None = None,
        *,
        outboundPorts: IDatagramPorts | None = None,
        peerAddresses: Sequence[Address] | None = None,
        udpIdleTimeout: float | None = None,
    ) -> Deferred[Redirection]:
        """Grant N permissions: listen on N consecutive ports, relay each to its connect
        address (IFWXSession::RedirectConnections).

        @param connectAddresses: N >= 1 destinations the gateway connects (or sends) to.
        @param internalAddress: where to listen; port 0 (or None) allocates from the
            configured range of that IP. Host None/absent: the session's internal IP.
        @param proxyExternalAddress: source IP of the outbound legs; the session's
            external address by default.
        @param expectedPeer: the only IP accepted; the session's client IP by default.
        @param portRange: allocate from this inclusive range instead of the one
            configured for the listening IP (e.g. an FTP listener's passive ports).
        @param tls: TLS to start on the accepted (CLIENT) and connected (SERVER) legs
            of each TCP connection; a TLS connection never takes the fast path.
        @param dataFilterFactory: called for each TCP connection; the data filters it
            returns are attached in order (priorities 0, 1, ...), forcing user mode.
        @param sessionFilter: receives L{FirewallNotification}s with C{context}.
        @param outboundPorts: UDP: N sockets from L{openDatagramPorts}; permission i
            sends from socket i (the port the far side was told: RTSP's C{client_port})
            and adopts it: only its connect address is accepted there, and the socket
            closes with the permission (cancelling the ports cancels the permissions).
        @param peerAddresses: UDP: the exact peer (IP and port) of each internal port.
            The mapping is made at once (UDP_DESTINATION before the Deferred fires), so
            the connect address may send first; anyone else's datagrams are dropped and
            counted (the first is refused aloud).  It never expires unused.
        @param udpIdleTimeout: UDP: seconds a mapping lives with nothing passing;
            None: C{udp_idle_timeout}; 0: as long as the permission (a filter that
            ends it itself: a paused RTSP stream's silent RTP port must not expire).
            C{outboundPorts} and C{peerAddresses} are not for ALLOW_MULTIPLE.
        @return: a Deferred firing with a L{Redirection} once every listener is bound
            (and, for a UDP redirection the kernel UDP path takes, once the kernel
            holds its flows, so the ports may be announced at once).
            It fails with C{PortRangeExhausted}, C{PortUnavailable} (an explicit port is
            taken, or odd with EVEN_PORTS) or C{SessionClosed}, and with C{ValueError}
            for C{outboundPorts}/C{peerAddresses} that do not fit (TCP, wrong count,
            ALLOW_MULTIPLE, ports closed or adopted already).  UDP permissions provide
            L{IUDPRedirect}.
        """

    def openDatagramPorts(
        count: int,
        host: str | None = None,
        *,
        evenBase: bool = False,
        expectedPeer: str | None = None,
        portRange: tuple[int, int] | None = None,
    ) -> IDatagramPorts:
        """Bind C{count} UDP sockets on consecutive ports, synchronously.

        @param host: the IP to bind; None: the session's B{external} address (toward
            the server); C{session.internalAddress.host} for the client-facing side.
        @param evenBase: the first port is even (RTP even, RTCP odd).
        @param expectedPeer: the IP accepted until L{IDatagramPorts.expect} names a
            socket's exact peer; None: the server's IP on the external address, else
            the client's.
        @param portRange: allocate from this inclusive range instead of C{host}'s.
        @return: the open L{IDatagramPorts}, closed by its C{cancel()}, the session's
            close, or the end of the redirects that adopted every socket.
        @raise PortRangeExhausted: no free run.  @raise SessionClosed: the session is
            over.  @raise ValueError: no external address or server IP known yet.
        """

    def joinConnections(
        client: LegSpec,
        server: LegSpec,
        flags: RedirectFlags = RedirectFlags.TIMEOUT,
        sessionFilter: ISessionFilter | None = None,
        context: object = None,
        tls: Mapping[Side, LegTLS] | None = None,
    ) -> Deferred[IJoin]:
        """Relay one connection between two legs that are each accepted (L{Listen}) or
        connected (L{Connect}).

        redirectConnections always accepts one leg and connects the other; translating
        FTP data-channel modes needs both accepted, or both connected.  Single use.

        @return: a Deferred firing with the action once its listening legs are bound;
            their addresses are in C{action.listeningAddresses} by side.
        """

    def allowFutureConnect(
        source: Address,
        destination: Address,
        flags: RedirectFlags = RedirectFlags.TIMEOUT,
        proxyExternalAddress: str | None = None,
        transport: Transport = Transport.TCP,
        protocolId: uuid.UUID | None = None,
        sessionFilter: ISessionFilter | None = None,
        context: object = None,
        tls: Mapping[Side, LegTLS] | None = None,
        dataFilterFactory: Callable[[], Sequence[IDataFilter]] | None = None,
    ) -> Deferred[IFirewallAction]:
        """Let the next connection from C{source} to C{destination} through.

        The kernel hands that flow to the gateway (an nftables set element: see
        net/nft.py); the gateway relays it to C{destination} from
        C{proxyExternalAddress} (the session's external address by default), user
        mode or fast path as for a redirect.  Every other new flow stays refused.

        @param source: the peer's IP, and its port or 0 for any port.
        @param destination: an IP literal and port (of the same family).
        @param flags: TIMEOUT: expire unused after the redirect timeout (the kernel's
            element too); ALLOW_MULTIPLE: every matching connection until cancelled,
            else the first one only (the element is deleted as it is accepted);
            NO_KERNEL_MODE: never the fast path.
        @return: a Deferred firing with the L{IFirewallAction} once the kernel has the
            flow (C{internalAddress} and C{connectAddress}: the destination), with a
            redirect's notifications and C{context}.  It fails with C{FWXError} (no
            transparent listener; the flow is permitted already), C{NftError},
            C{TooManyPendingRedirects}, C{SessionClosed}, or C{ValueError} (UDP, not
            IP literals, families differ).
        """

    def startTLS(side: Side, tls: LegTLS) -> None:
        """Start TLS on the primary connection's leg of C{side} now (after FTP's AUTH TLS,
        say): what was written to it before goes in clear, what follows encrypted."""

    def isTLS(side: Side) -> bool:
        """True when the primary's leg of C{side} speaks TLS (started here, or accepted
        on a TLS listener)."""

    def tlsConnection(side: Side) -> object:
        """The pyOpenSSL connection of the primary's TLS leg of C{side}, else None."""

    def close(reason: str | None = None) -> None:
        """End the session: cancel every permission, close both legs. Idempotent."""

    def whenClosed() -> Deferred[None]:
        """A Deferred firing once the session is fully over."""


class ITransparentFilter(Interface):
    """Optional for a filter: it can serve a transparent listener (C{transparent = true},
    C{--transparent}), whose sessions' upstream is each connection's original
    destination instead of a configured one."""

    def parseTransparentOptions(options: Mapping[str, object]) -> object:
        """L{IFilter.parseOptions} for a transparent listener (which has no upstream:
        L{ISession.defaultUpstream} is the original destination of each session).

        @raise fwxtwisted.errors.ConfigError: naming the bad key.
        """


class IFilter(IPlugin):
    """An application filter (IFWXFilter), found as a twisted plugin (so it is an
    C{IPlugin} too: getPlugins finds only those)."""

    name = Attribute("Short name used on the command line and in config (str).")
    description = Attribute("One line for --help (str).")
    protocols = Attribute("Sequence of L{ProtocolDefinition}: what the filter handles.")

    def parseOptions(options: Mapping[str, object], upstream: Address | None) -> object:
        """Validate a listener's filter options (from TOML or the command line) and its
        upstream (None when none is configured), so a listener that cannot work is a
        configuration error at start, not a failure at its first session.

        @return: the parsed options, handed to every session as L{ISession.options}.
        @raise fwxtwisted.errors.ConfigError: naming the bad key.
        """

    def commandLineOptions() -> usage.Options | None:
        """A fresh C{usage.Options} for C{twistd fwx NAME}, or None if the filter has no
        shortcut command. Its C{listenerConfig()} returns a listener table as in TOML."""

    def attachToSession(session: ISession) -> ISessionFilter:
        """Make the session filter for a new primary connection (AttachToSession)."""
