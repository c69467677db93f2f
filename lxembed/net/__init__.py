"""Host networking from a description: bridges, named veths with fixed MACs, macvlan shims, VLANs,
anti-spoofing and firewall rules (nftables), DHCP (dnsmasq), reversible through recorded state."""
