"""The node runtime: the round driver around protocol.state, one node, many in one process.

- :mod:`node.runtime.driver`: drives a role's state machine from chain events, gossip,
  fetches, jobs and transactions;
- :mod:`node.runtime.node`: a whole node (keys, host, discovery, gossip, blocks, chain);
- :mod:`node.runtime.inprocess`: requester + workers + validators (+ bootstrap) in one
  process on the embedded chain.
"""
