"""vswitch: the side-effect half of vswitch-carp (TAPs, AF_PACKET, netlink, the daemon, the CLI)."""
