"""The node runtime: the round driver around protocol.state, and one whole node.

- :mod:`node.runtime.driver`: pumps a role's state machine: each action to the effect
  group it touches, each answer back as an event;
- :mod:`node.runtime.effects` (and ``effects_chain``, ``effects_network``,
  ``effects_jobs``): those effect groups, as Protocols and their real implementations;
- :mod:`node.runtime.learning`: the torch side of the jobs (verdicts are
  :mod:`protocol.verdict`'s);
- :mod:`node.runtime.node`: a whole node (keys, host, discovery, gossip, blocks, chain).

Many nodes in one process (a test and localnet harness) are :mod:`node.localnet.inprocess`.
"""
