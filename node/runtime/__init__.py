"""The node runtime: the round driver around protocol.state, and one whole node.

- :mod:`node.runtime.driver`: drives a role's state machine from chain events, gossip,
  fetches, jobs and transactions;
- :mod:`node.runtime.node`: a whole node (keys, host, discovery, gossip, blocks, chain).

Many nodes in one process (a test and localnet harness) are :mod:`node.localnet.inprocess`.
"""
