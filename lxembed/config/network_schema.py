"""The host network description's keys: one Setting each, read by settings.validate().

A description is a standalone TOML file (`lxembed net up FILE`) or the `[host_network]` table of a
recipe. Type and choice checks happen here; checks across keys (a port's bridge exists, a MAC is
unique, an address has a prefix) and the port-number lists (kind "raw": lists here hold strings)
live in lxembed.net.model.
"""

from __future__ import annotations

from .settings import Setting

DHCP_FIELDS = (
    Setting("range", "list", None, 'first and last address handed out (["10.77.0.100", '
            '"10.77.0.150"])'),
    Setting("lease_time", "str", "1h", "lease time as dnsmasq reads it (45m, 1h, infinite)"),
    Setting("static", "dict", {}, 'static leases: MAC = address ({ "02:00:00:77:00:0c" = '
            '"10.77.0.12" })'),
    Setting("dns", "bool", False, "also answer DNS on the bridge address (dnsmasq's port 53)"),
)

BRIDGE_FIELDS = (
    Setting("name", "str", None, "bridge name"),
    Setting("hwaddr", "str", None, "bridge MAC (default: a stable one derived from the name, so "
            "it never changes as ports come and go)"),
    Setting("addresses", "list", [], "host addresses on the bridge, with prefix (10.77.0.1/24)"),
    Setting("stp", "bool", False, "spanning tree"),
    Setting("forward_delay", "int", 0, "forward delay in seconds (0: ports forward at once)"),
    Setting("vlan_filtering", "bool", False, "VLAN-aware bridge"),
    Setting("mtu", "int", None, "bridge MTU"),
    Setting("dhcp", "table", None, "DHCP server on this bridge (dnsmasq)", fields=DHCP_FIELDS),
    Setting("host_tcp", "raw", None, "TCP port numbers of the host reachable from this bridge "
            "(absent: the host's input is not filtered; DHCP and DNS always pass when `dhcp` "
            "is set)"),
    Setting("host_udp", "raw", None, "UDP ports of the host reachable from this bridge (as "
            "host_tcp)"),
)

PORT_FIELDS = (
    Setting("name", "str", None, "host-side veth name (what host firewall rules match)"),
    Setting("hwaddr", "str", None, "host-side MAC (default: stable, derived from the name)"),
    Setting("bridge", "str", None, "bridge the host side joins"),
    Setting("peer", "str", None, "peer (container-side) name: eth0 in a netns, or a host name "
            "a container runtime takes"),
    Setting("peer_hwaddr", "str", None, "peer MAC (default: stable, derived from the names)"),
    Setting("netns", "str", None, "network namespace the peer is moved into (created if "
            "missing, `ip netns` style); absent: the peer stays for a container runtime"),
    Setting("created_by", "str", "lxembed", "who makes the veth: lxembed (`net up`), or lxc "
            "(lxc.net.N.veth.pair; `net up` only installs the rules, LXC's hook sets the MAC)",
            choices=("lxembed", "lxc")),
    Setting("addresses", "list", [], "peer addresses with prefix, set in `netns` and allowed "
            "by anti-spoofing"),
    Setting("gateway", "str", None, "default route in `netns` (default: the bridge's IPv4 "
            "address when the port has an IPv4 address)"),
    Setting("anti_spoofing", "bool", True, "drop frames whose source MAC or IP is not declared "
            "(peer_hwaddr, allowed_macs, addresses, allowed_ips, the bridge's static lease)"),
    Setting("dhcp_server", "bool", False, "the port may answer address configuration: DHCP "
            "(UDP 67 to 68), DHCPv6 (547 to 546), IPv6 router advertisements and redirects, "
            "IPv4 redirects; from any other port the bridge drops them, with or without "
            "anti_spoofing (a rogue server answers from its own, allowed, address)"),
    Setting("allowed_macs", "list", [], "MACs the port may send from besides peer_hwaddr"),
    Setting("allowed_ips", "list", [], "source addresses or subnets allowed besides addresses"),
    Setting("isolated", "bool", False, "bridge port `isolated` flag: talks to the host and "
            "uplinks, never to another isolated port"),
    Setting("vlan", "int", None, "VLAN id the port is an untagged member of (its PVID) on a "
            "vlan_filtering bridge; absent: the bridge's default VLAN 1"),
    Setting("inbound_tcp", "raw", None, "TCP port numbers open towards this port from outside it "
            "(absent: no inbound filter; [] closes all)"),
    Setting("inbound_udp", "raw", None, "UDP ports open towards this port (as inbound_tcp)"),
)

VETH_FIELDS = (
    Setting("name", "str", None, "one end"),
    Setting("peer", "str", None, "the other end (stays on the host)"),
    Setting("hwaddr", "str", None, "MAC of `name` (default: stable, derived from the name)"),
    Setting("peer_hwaddr", "str", None, "MAC of `peer` (default: stable)"),
)

MACVLAN_FIELDS = (
    Setting("name", "str", None, "interface name (in `netns` when given)"),
    Setting("parent", "str", None, "parent interface on the host"),
    Setting("mode", "str", "bridge", "macvlan mode (bridge: macvlans on one parent talk to each "
            "other, so a host shim reaches the containers)",
            choices=("bridge", "private", "vepa", "passthru")),
    Setting("hwaddr", "str", None, "MAC (default: stable, derived from the name)"),
    Setting("netns", "str", None, "network namespace it is made in; absent: a host shim"),
    Setting("addresses", "list", [], "addresses with prefix"),
    Setting("routes", "list", [], "extra on-link routes through it (10.78.0.0/24)"),
    Setting("gateway", "str", None, "default route in `netns`"),
)

VLAN_FIELDS = (
    Setting("name", "str", None, "VLAN interface name"),
    Setting("parent", "str", None, "parent interface"),
    Setting("id", "int", None, "VLAN id (1-4094)"),
    Setting("bridge", "str", None, "bridge it joins"),
    Setting("addresses", "list", [], "host addresses with prefix"),
)

PHYS_FIELDS = (
    Setting("name", "str", None, "an existing host interface"),
    Setting("bridge", "str", None, "bridge it is handed over to (`down` takes it back out)"),
    Setting("netns", "str", None, "network namespace it is moved into (`down` moves it back)"),
)

NAT_FIELDS = (
    Setting("bridge", "str", None, "bridge whose IPv4 subnets are masqueraded"),
    Setting("uplink", "str", None, "interface the traffic leaves through"),
)

NETWORK_DESCRIPTION_SETTINGS = (
    Setting("name", "str", None, "description name: names the nftables tables and the recorded "
            "state (default: the file name without .toml)"),
    Setting("bridge", "tables", [], "bridges ([[bridge]])", fields=BRIDGE_FIELDS),
    Setting("port", "tables", [], "veth ports on a bridge ([[port]])", fields=PORT_FIELDS),
    Setting("veth", "tables", [], "plain veth pairs, e.g. a parent for macvlans ([[veth]])",
            fields=VETH_FIELDS),
    Setting("macvlan", "tables", [], "macvlans: host shims and namespaced ones ([[macvlan]])",
            fields=MACVLAN_FIELDS),
    Setting("vlan", "tables", [], "VLAN sub-interfaces ([[vlan]])", fields=VLAN_FIELDS),
    Setting("phys", "tables", [], "physical interfaces handed over ([[phys]])",
            fields=PHYS_FIELDS),
    Setting("nat", "tables", [], "masquerade from a bridge to an uplink ([[nat]])",
            fields=NAT_FIELDS),
)
