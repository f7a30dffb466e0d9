// libp2p 3 / Helia 7 call Promise.withResolvers (Node >= 22); this machine has Node 20.
// Imported first by helia_peer.mjs, before any libp2p module is evaluated.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve, reject
    const promise = new this((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}
