"""The box's firewall, as ONE list of rules: the bootstrap installs it, the audit reads it back.

What may be reached from outside is derived from the spec alone: TCP on every port of
host.yaml's ``open_ports``; UDP only on a port the edge publishes publicly over UDP (HTTP/3
on 443) that ``open_ports`` also opens. Nothing is opened by default.

The rules are kept in the form ``iptables -S`` prints them (``-p tcp -m tcp --dport 22``),
so the script the bootstrap installs is rendered from the very lines the audit expects to
read back, for IPv4 and IPv6 alike:

- ``VPSCTL-INPUT``, hooked first in INPUT: loopback, replies, docker's bridges, ICMP and the
  open ports return; everything else is dropped;
- ``VPSCTL-FORWARD``, hooked first in DOCKER-USER (docker consults it before its own rules,
  and docker-published ports never pass INPUT): the same ports, matched on the address the
  packet had before docker's DNAT.

Swarm peers (the OTHER nodes of a Docker Swarm, by address): from each of them only,
VPSCTL-INPUT also lets in the swarm's ports (:data:`SWARM_TCP`, :data:`SWARM_UDP`) and ESP
(IP protocol 50: an encrypted overlay wraps its VXLAN in IPsec ESP); all of it arrives at
the box's own address, so it passes INPUT, never FORWARD. A node's containers reach the
world through ``docker_gwbridge`` (the bridge swarm makes for overlay-attached containers),
which both chains then treat like docker's other bridges. Without peers, not one rule
differs from a single box's.

IPv6: its rules are required unless IPv6 is verifiably off in the kernel, meaning no IPv6
stack at all (``/proc/net/if_inet6`` absent: booted with ``ipv6.disable=1``) or
``disable_ipv6 = 1`` on every interface and as the default for new ones. Anything else with a
missing or failing ``ip6tables`` fails the firewall script (and the bootstrap), and fails the
audit: a box is never left open over IPv6 because a tool was missing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vpsctl.core import sections
from vpsctl.core.templates import environment
from vpsctl.errors import VpsctlError

if TYPE_CHECKING:  # the bootstrap deploy imports this module: keep it light
    from vpsctl.spec.studio import Spec

SCRIPT_TEMPLATE = "vpsctl-firewall.sh.j2"
INPUT_CHAIN = "VPSCTL-INPUT"
FORWARD_CHAIN = "VPSCTL-FORWARD"
# The built-in chain each of vpsctl's chains must be the first rule of.
HOOKS = {"INPUT": INPUT_CHAIN, "DOCKER-USER": FORWARD_CHAIN}
# judges the live rules and re-applies them ({inventory}: as the operator names it)
REAPPLY = "vpsctl apply -i {inventory} --only bootstrap"
FAMILIES = {4: ("iptables", "IPv4", "icmp"), 6: ("ip6tables", "IPv6", "ipv6-icmp")}
# Docker Swarm, between its nodes only: cluster management (managers), gossip, VXLAN data
SWARM_TCP = (2377, 7946)
SWARM_UDP = (7946, 4789)
# the bridge docker gives swarm (overlay-attached) containers for their way out
SWARM_BRIDGE = "docker_gwbridge"


class BadPeer(VpsctlError):
    """A swarm peer that is not an IP address, or a swarm port opened to anyone beside peers."""


def peer_address(peer: str) -> str:
    """``peer`` as ``iptables -S`` prints a source: ``10.0.0.2/32``, ``fd00::2/128``."""
    try:
        ip = ipaddress.ip_address(peer.strip().strip("[]"))
    except ValueError:
        raise BadPeer(
            f"swarm peer {peer!r} is not an IP address; give each other node's address as "
            "IPv4 (10.0.0.2) or IPv6 (fd00::2), without a port or a prefix"
        ) from None
    return f"{ip.compressed}/{ip.max_prefixlen}"


@dataclass(frozen=True)
class Ports:
    """What the firewall lets in from outside: ``tcp`` and ``udp`` ports from anyone, the
    swarm's ports and ESP from each of ``peers`` only (the other nodes' addresses)."""

    tcp: tuple[int, ...]
    udp: tuple[int, ...]
    peers: tuple[str, ...] = ()
    swarm: bool = False  # a swarm node, even one with no peer yet (a cluster of one node)

    @property
    def in_swarm(self) -> bool:
        """Whether this box is a swarm node (its containers go out through docker_gwbridge)."""
        return self.swarm or bool(self.peers)

    def __post_init__(self) -> None:
        # as iptables prints them, once each, in a stable order (the script's digest)
        found = {peer_address(peer) for peer in self.peers}
        key = lambda a: (":" in a, ipaddress.ip_network(a))  # noqa: E731
        object.__setattr__(self, "peers", tuple(sorted(found, key=key)))
        wide = [f"{p}/tcp" for p in SWARM_TCP if p in self.tcp]
        wide += [f"{p}/udp" for p in SWARM_UDP if p in self.udp]
        if found and wide:
            raise BadPeer(
                f"{', '.join(wide)} would be open to anyone, and with swarm peers the swarm's "
                "ports are let in from the peers only: take them out of open_ports"
            )

    def peers_of(self, family: int) -> tuple[str, ...]:
        """The peers of IP ``family`` (4 or 6), as ``iptables -S`` prints them."""
        return tuple(p for p in self.peers if (":" in p) == (family == 6))

    def describe(self) -> str:
        """``tcp 22, 80, 443; udp 443`` (``; swarm from 10.0.0.3, 10.0.0.4`` with peers)."""
        text = "tcp " + ", ".join(map(str, self.tcp)) if self.tcp else "no tcp"
        if self.udp:
            text += "; udp " + ", ".join(map(str, self.udp))
        if self.peers:
            text += "; swarm from " + ", ".join(p.rsplit("/", 1)[0] for p in self.peers)
        return text


def is_public(address: str) -> bool:
    """Whether a listening or binding address is reachable from outside the box (anything but
    loopback; ``*``, ``0.0.0.0``, ``::`` and an empty docker ``HostIp`` are every address)."""
    host = address.strip("[]").split("%", 1)[0]
    if host in ("", "*"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_loopback


def ports_for(spec: Spec) -> Ports:
    """The spec's open ports: every ``open_ports`` entry over TCP; over UDP only what the
    edge publishes publicly over UDP and ``open_ports`` opens (HTTP/3 when 443 is open)."""
    open_ports = sorted(set(spec.host.open_ports))
    udp: set[int] = set()
    for stack in spec.stacks.values():
        if stack.role != "edge":
            continue
        for service in stack.services.values():
            for port in service.ports:
                if (
                    port.protocol == "udp"
                    and is_public(port.host_ip)
                    and port.published in open_ports
                ):
                    udp.add(port.published)
    return Ports(tuple(open_ports), tuple(sorted(udp)))


def chain_rules(family: int, ports: Ports) -> dict[str, list[str]]:
    """vpsctl's two chains for ``family`` (4 or 6), rule by rule, as ``iptables -S`` lists
    them: what the bootstrap appends and what the audit expects to read back."""
    icmp = FAMILIES[family][2]
    inp = INPUT_CHAIN
    fwd = FORWARD_CHAIN
    # a swarm node's overlay-attached containers go out through docker_gwbridge
    gwbridge = [SWARM_BRIDGE] if ports.in_swarm else []
    inputs = [
        f"-A {inp} -i lo -j RETURN",
        f"-A {inp} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
        f"-A {inp} -i docker0 -j RETURN",
        f"-A {inp} -i br-+ -j RETURN",
        *(f"-A {inp} -i {bridge} -j RETURN" for bridge in gwbridge),
        f"-A {inp} -p {icmp} -j RETURN",
        *(f"-A {inp} -p tcp -m tcp --dport {p} -j RETURN" for p in ports.tcp),
        *(f"-A {inp} -p udp -m udp --dport {p} -j RETURN" for p in ports.udp),
        *swarm_rules(family, ports),
        f"-A {inp} -j DROP",
    ]
    forwards = [
        f"-A {fwd} -i docker0 -j RETURN",
        f"-A {fwd} -i br-+ -j RETURN",
        *(f"-A {fwd} -i {bridge} -j RETURN" for bridge in gwbridge),
        f"-A {fwd} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
        *(f"-A {fwd} -p tcp -m conntrack --ctorigdstport {p} -j RETURN" for p in ports.tcp),
        *(f"-A {fwd} -p udp -m conntrack --ctorigdstport {p} -j RETURN" for p in ports.udp),
        f"-A {fwd} -j DROP",
    ]
    return {inp: inputs, fwd: forwards}


def swarm_rules(family: int, ports: Ports) -> list[str]:
    """VPSCTL-INPUT's rules letting each peer of ``family`` in: the swarm's ports and ESP."""
    return [
        rule
        for peer in ports.peers_of(family)
        for rule in (
            *(f"-A {INPUT_CHAIN} -s {peer} -p tcp -m tcp --dport {p} -j RETURN" for p in SWARM_TCP),
            *(f"-A {INPUT_CHAIN} -s {peer} -p udp -m udp --dport {p} -j RETURN" for p in SWARM_UDP),
            f"-A {INPUT_CHAIN} -s {peer} -p esp -j RETURN",
        )
    ]


# POSIX sh, shared by the firewall script and the audit's read so that both decide "IPv6 is
# off" the same way. Reads only the kernel's own files under PROC.
IPV6_OFF_SH = """\
ipv6_off() {
  [ -e "$PROC/net/if_inet6" ] || return 0
  for f in "$PROC"/sys/net/ipv6/conf/*/disable_ipv6; do
    [ "$(cat "$f" 2>/dev/null)" = 1 ] || return 1
  done
  return 0
}
"""


def script(ports: Ports, proc: str = "/proc") -> str:
    """The box's ``/usr/local/sbin/vpsctl-firewall``, rendered from :func:`chain_rules`.

    ``proc`` is where the script looks for the kernel's IPv6 state (tests point it at a
    fake tree; the box always uses ``/proc``).
    """
    env = environment()
    families = [
        {
            "tool": FAMILIES[family][0],
            "name": FAMILIES[family][1],
            "chains": [
                {
                    "name": chain,
                    "hook": hook,
                    "create_hook": hook != "INPUT",  # DOCKER-USER exists once docker runs
                    "rules": chain_rules(family, ports)[chain],
                }
                for hook, chain in HOOKS.items()
            ],
        }
        for family in FAMILIES
    ]
    return env.get_template(SCRIPT_TEMPLATE).render(
        ports=ports.describe(),
        families=families,
        proc=proc,
        ipv6_off=IPV6_OFF_SH,
    )


# ── the audit's read ─────────────────────────────────────────────────────────────────────

MARK = "@@firewall"

# Appended to the audit's one remote command: each family's filter table as ``-S`` lists
# it, and whether IPv6 is off. A missing or failing tool is reported, never hidden.
READ_SCRIPT = (
    "PROC=/proc\n"
    + IPV6_OFF_SH
    + "".join(
        f"echo '{MARK} {family}'\n{tool} -w -S 2>&1 || echo '{MARK}-error {family}'\n"
        for family, (tool, _, _) in FAMILIES.items()
    )
    + f"if ipv6_off; then echo '{MARK}-ipv6 off'; else echo '{MARK}-ipv6 on'; fi\n"
    + f"echo '{MARK}-end'\n"
)


@dataclass
class Listing:
    """One family's filter table as the box listed it."""

    chains: set[str]
    rules: dict[str, list[str]]  # chain → its ``-A`` lines, in order
    error: str = ""


@dataclass
class FirewallFacts:
    """The live firewall, per family, and whether IPv6 is off in the kernel."""

    listings: dict[int, Listing]
    ipv6_off: bool = False
    read: bool = False  # the read ran to its end


def parse(output: str) -> FirewallFacts:
    """Parse :data:`READ_SCRIPT`'s sections out of the audit's output."""
    facts = FirewallFacts({})
    raw: dict[int, list[str]] = {}
    name = MARK.removeprefix(sections.MARK)
    for section in sections.split(output):
        if section.name == name:
            raw.setdefault(int(section.words[0]), []).extend(x.rstrip() for x in section.lines)
        elif section.name == f"{name}-error":
            raw.setdefault(int(section.words[0]), []).append(f"{MARK}-error")
        elif section.name == f"{name}-ipv6":
            facts.ipv6_off = section.words[:1] == ["off"]
        elif section.name == f"{name}-end":
            facts.read = True
    for family, lines in raw.items():
        facts.listings[family] = _listing(lines)
    return facts


def _listing(lines: list[str]) -> Listing:
    listing = Listing(set(), {})
    if f"{MARK}-error" in lines:
        said = [line for line in lines if line and line != f"{MARK}-error"]
        listing.error = said[-1][:200] if said else "failed"
        return listing
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "-N":
            listing.chains.add(parts[1])
        elif len(parts) >= 2 and parts[0] in ("-A", "-P"):
            listing.chains.add(parts[1])
            if parts[0] == "-A":
                listing.rules.setdefault(parts[1], []).append(" ".join(parts))
    return listing


@dataclass(frozen=True)
class Verdict:
    """One firewall check: its name, whether it passed, what was found, what is required."""

    name: str
    ok: bool
    value: str
    threshold: str


def judge(facts: FirewallFacts, ports: Ports, inventory: str = "INVENTORY") -> list[Verdict]:
    """Compare the live rules with :func:`chain_rules` for each family and hook.

    A hook passes when vpsctl's chain is its FIRST rule (a rule ahead of it, such as an
    ``iptables -I INPUT … -j ACCEPT``, is named), the chain holds exactly the expected
    rules, and, for DOCKER-USER, FORWARD consults DOCKER-USER before anything else.
    """
    verdicts: list[Verdict] = []
    bar = f"only {ports.describe()} from outside, the rest dropped"
    for family, (tool, name, _) in FAMILIES.items():
        listing = facts.listings.get(family)
        # IPv6 off in the kernel: nothing reaches the box over it, whatever its rules say
        off = family == 6 and facts.ipv6_off
        if listing is None or listing.error or not facts.read:
            said = listing.error if listing is not None else "no answer"
            if off:
                verdicts.append(
                    Verdict(f"firewall {name}", True, "IPv6 is off in the kernel", f"{bar}, or off")
                )
            else:
                verdicts.append(
                    Verdict(f"firewall {name}", False, f"{tool} -S failed: {said}", bar)
                )
            continue
        expected = chain_rules(family, ports)
        for hook, chain in HOOKS.items():
            problems = _hook_problems(listing, hook, chain, expected[chain], ports.in_swarm)
            if not problems:
                value = f"{chain} first, as the spec says"
            elif off:
                value = "IPv6 is off in the kernel; its rules differ: " + "; ".join(problems)
            else:
                fix = REAPPLY.format(inventory=inventory)
                value = "; ".join(problems) + f"; `{fix}` re-applies the rules"
            verdicts.append(Verdict(f"firewall {name} {hook}", off or not problems, value, bar))
    return verdicts


def _stray_kind(rule: str) -> str:
    """How a rule the spec does not hold is named: one letting a swarm port (or ESP) in from
    any source and any interface is open to anyone."""
    words = rule.split()
    options = dict(zip(words[2::2], words[3::2], strict=False))  # after "-A CHAIN"
    if {"-s", "-i"} & options.keys() or options.get("-j") != "RETURN":
        return "not in the spec"
    proto = options.get("-p", "")
    port = options.get("--dport") or options.get("--ctorigdstport") or ""
    if proto == "esp":
        return "swarm ESP open to anyone"
    swarm = {"tcp": SWARM_TCP, "udp": SWARM_UDP}.get(proto, ())
    if port.isdigit() and int(port) in swarm:
        return f"swarm port {port}/{proto} open to anyone"
    return "not in the spec"


# Docker, on a node with an encrypted overlay, puts this DROP of unencrypted VXLAN first in
# INPUT (followed by a BPF match of the network's VNI): it only drops, so it may stand ahead.
ENCRYPTED_OVERLAY_DROP = "-A INPUT -p udp -m policy --dir in --pol none -m udp --dport 4789 "


def _dockers_own(rule: str) -> bool:
    return rule.startswith(ENCRYPTED_OVERLAY_DROP) and rule.endswith(" -j DROP")


def _hook_problems(
    listing: Listing, hook: str, chain: str, expected: list[str], swarm: bool = False
) -> list[str]:
    problems: list[str] = []
    hook_rules = listing.rules.get(hook, [])
    jump = f"-A {hook} -j {chain}"
    if jump not in hook_rules:
        problems.append(f"{hook} does not jump to {chain}")
    else:
        ahead = hook_rules[: hook_rules.index(jump)]
        problems += [
            f"ahead of {chain}: {rule}" for rule in ahead if not (swarm and _dockers_own(rule))
        ]
    if chain not in listing.chains:
        problems.append(f"{chain} is missing")
    else:
        have = listing.rules.get(chain, [])
        missing = [rule for rule in expected if rule not in have]
        extra = [rule for rule in have if rule not in expected]
        problems += [f"missing: {rule}" for rule in missing]
        problems += [f"{_stray_kind(rule)}: {rule}" for rule in extra]
        if not missing and not extra and have != expected:
            problems.append(f"{chain} rules out of order")
    if hook == "DOCKER-USER":
        forward = listing.rules.get("FORWARD", [])
        first = "-A FORWARD -j DOCKER-USER"
        if first in forward:
            problems += [
                f"ahead of DOCKER-USER: {rule}" for rule in forward[: forward.index(first)]
            ]
        elif forward:
            problems.append("FORWARD has rules but never consults DOCKER-USER")
    return problems


# ── ports published or listened on, against the spec ─────────────────────────────────────


@dataclass(frozen=True)
class Exposure:
    """A port reachable on non-loopback addresses, and who holds it."""

    port: int
    protocol: str  # tcp | udp
    addresses: tuple[str, ...]  # as docker or ss name them: 0.0.0.0, ::, *, 10.0.0.5 …
    owner: str  # "container NAME" or "process NAME"

    def where(self) -> str:
        """``0.0.0.0:8081, [::]:8081 (tcp)``."""
        shown = [f"[{a}]" if ":" in a else a for a in self.addresses]
        return ", ".join(f"{a}:{self.port}" for a in shown) + f" ({self.protocol})"


def _merged(found: list[tuple[int, str, str, str]]) -> list[Exposure]:
    """One Exposure per (port, protocol, owner), its addresses gathered, in first-seen order."""
    merged: dict[tuple[int, str, str], list[str]] = {}
    for port, protocol, address, owner in found:
        addresses = merged.setdefault((port, protocol, owner), [])
        if address not in addresses:
            addresses.append(address)
    return [
        Exposure(port, protocol, tuple(addresses), owner)
        for (port, protocol, owner), addresses in merged.items()
    ]


def declared_publications(spec: Spec) -> set[tuple[str, str, int, str]]:
    """``(stack, service, published port, protocol)`` of every public port the spec declares."""
    return {
        (stack_name, service_name, port.published, port.protocol)
        for stack_name, stack in spec.stacks.items()
        for service_name, service in stack.services.items()
        for port in service.ports
        if is_public(port.host_ip)
    }


def container_exposures(
    name: str, labels: Mapping[str, str], bindings: Mapping[str, object] | None, spec: Spec
) -> tuple[list[Exposure], list[Exposure]]:
    """A container's public port bindings, split into (declared by the spec, not declared).

    ``bindings`` is docker's ``NetworkSettings.Ports``: ``{"80/tcp": [{"HostIp": "0.0.0.0",
    "HostPort": "8081"}], …}``. A declared service publishing a port the spec does not give
    it is not declared either.
    """
    declared = declared_publications(spec)
    project = labels.get("com.docker.compose.project", "")
    service = labels.get("com.docker.compose.service", "")
    ours: list[tuple[int, str, str, str]] = []
    stray: list[tuple[int, str, str, str]] = []
    for key, hosts in sorted((bindings or {}).items()):
        protocol = key.rsplit("/", 1)[1] if "/" in key else "tcp"
        for binding in hosts if isinstance(hosts, list) else []:
            if not isinstance(binding, dict):
                continue
            address = str(binding.get("HostIp", ""))
            port_text = str(binding.get("HostPort", ""))
            if not port_text.isdigit() or not is_public(address):
                continue
            port = int(port_text)
            target = ours if (project, service, port, protocol) in declared else stray
            target.append((port, protocol, address or "*", f"container {name}"))
    return _merged(ours), _merged(stray)


def listener_exposures(lines: Iterable[str], ports: Ports) -> tuple[list[Exposure], list[Exposure]]:
    """TCP listening sockets (``ss -Hltnp`` lines) on non-loopback addresses, split into
    (on an open port, not). ``docker-proxy`` is left out: docker's bindings are judged per
    container, by name. On a swarm node, the swarm's own TCP ports are declared too (the
    firewall lets them in from the peers only)."""
    allowed = set(ports.tcp) | (set(SWARM_TCP) if ports.in_swarm else set())
    ours: list[tuple[int, str, str, str]] = []
    stray: list[tuple[int, str, str, str]] = []
    for line in lines:
        parts = line.split()
        if len(parts) < 5 or ":" not in parts[3]:
            continue
        address, _, port_text = parts[3].rpartition(":")
        address = address.strip("[]")
        if not port_text.isdigit() or not is_public(address):
            continue
        process = line.split('"', 2)[1] if line.count('"') >= 2 else ""
        if process == "docker-proxy":
            continue
        port = int(port_text)
        target = ours if port in allowed else stray
        target.append((port, "tcp", address, f"process {process or '?'}"))
    return _merged(ours), _merged(stray)
