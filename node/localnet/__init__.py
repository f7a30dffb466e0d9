"""`fl-node localnet`: a whole fl-node network on this machine (launcher, scenarios, results)."""
