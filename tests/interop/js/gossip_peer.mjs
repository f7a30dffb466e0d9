// A js-libp2p 3 peer running @libp2p/gossipsub for fl-node's gossip interop test, driven over
// stdin/stdout (one JSON object per line each way, the protocol of helia_peer.mjs). TCP +
// Noise + Yamux + identify on 127.0.0.1; gossipsub with strict signing, as fl-node runs it.
//
// Commands:  {"cmd":"dial","addr":MULTIADDR}
//            {"cmd":"subscribe","topic":T}
//            {"cmd":"mesh","topic":T}                          -> {"mesh":[PEER_ID...],"subscribers":[...]}
//            {"cmd":"received","topic":T,"count":N,"timeout_ms":N}
//                 -> {"messages":[{"from","seqno","data","topic"}]}  (hex; waits for N messages)
//            {"cmd":"publish","topic":T,"data":HEX}            -> {"recipients":[PEER_ID...]}
//            {"cmd":"stop"}
// Every reply is {"ok":true,...} or {"ok":false,"error":TEXT}.
import './node20.mjs'
import { reply, serve } from './lines.mjs'
import { gossipsub } from '@libp2p/gossipsub'
import { identify } from '@libp2p/identify'
import { noise } from '@libp2p/noise'
import { tcp } from '@libp2p/tcp'
import { yamux } from '@libp2p/yamux'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'

const libp2p = await createLibp2p({
  addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: {
    identify: identify(),
    pubsub: gossipsub({ globalSignaturePolicy: 'StrictSign', emitSelf: false })
  }
})
const pubsub = libp2p.services.pubsub

const inbox = new Map() // topic -> [message]
pubsub.addEventListener('message', (evt) => {
  const msg = evt.detail
  if (!inbox.has(msg.topic)) inbox.set(msg.topic, [])
  inbox.get(msg.topic).push({
    from: msg.type === 'signed' ? msg.from.toString() : null,
    seqno: msg.type === 'signed' ? msg.sequenceNumber.toString(16) : null,
    data: Buffer.from(msg.data).toString('hex'),
    topic: msg.topic
  })
})

async function received (topic, count, timeoutMs) {
  const deadline = Date.now() + timeoutMs
  while ((inbox.get(topic) ?? []).length < count) {
    if (Date.now() > deadline) {
      throw new Error(`got ${(inbox.get(topic) ?? []).length} of ${count} messages on ${topic} in ${timeoutMs} ms`)
    }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  return inbox.get(topic)
}

async function run (msg) {
  switch (msg.cmd) {
    case 'dial':
      await libp2p.dial(multiaddr(msg.addr))
      return {}
    case 'subscribe':
      pubsub.subscribe(msg.topic)
      return {}
    case 'mesh':
      return {
        mesh: pubsub.getMeshPeers(msg.topic).map(String),
        subscribers: pubsub.getSubscribers(msg.topic).map(String)
      }
    case 'received':
      return { messages: await received(msg.topic, msg.count, msg.timeout_ms ?? 20000) }
    case 'publish': {
      const result = await pubsub.publish(msg.topic, Buffer.from(msg.data, 'hex'))
      return { recipients: result.recipients.map(String) }
    }
    case 'stop':
      await libp2p.stop()
      reply({ ok: true })
      process.exit(0)
      break
    default:
      throw new Error(`unknown command ${msg.cmd}`)
  }
}

reply({ ok: true, peer_id: libp2p.peerId.toString(), addrs: libp2p.getMultiaddrs().map(String) })

await serve(run)
await libp2p.stop()
