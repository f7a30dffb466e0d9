// A Helia 7 peer for fl-node's interop tests, driven over stdin/stdout (one JSON object
// per line each way). TCP + Noise + Yamux + identify on 127.0.0.1, bitswap as its only
// block broker, no routers (nothing outside the machine is dialled).
//
// Commands:  {"cmd":"dial","addr":MULTIADDR}
//            {"cmd":"cat","cid":CID,"timeout_ms":N}      -> {"sha256","length","kubo_cid"}
//            {"cmd":"add","path":FILE}                     -> {"cid"}   (Kubo's import parameters)
//            {"cmd":"import_car","path":FILE}              -> {"roots":[CID...]}
//            {"cmd":"has","cid":CID}                       -> {"has"}
//            {"cmd":"stop"}
// Every reply is {"ok":true,...} or {"ok":false,"error":TEXT}.
import './node20.mjs'
import { reply, serve } from './lines.mjs'
import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { withBitswap } from '@helia/bitswap'
import { car } from '@helia/car'
import { withLibp2pLight } from '@helia/libp2p'
import { unixfs } from '@helia/unixfs'
import { CarReader } from '@ipld/car'
import { identify } from '@libp2p/identify'
import { noise } from '@libp2p/noise'
import { tcp } from '@libp2p/tcp'
import { yamux } from '@libp2p/yamux'
import { multiaddr } from '@multiformats/multiaddr'
import { MemoryBlockstore } from 'blockstore-core'
import { createHeliaLight } from 'helia'
import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'
import { CID } from 'multiformats/cid'

// `ipfs add --cid-version=1` (Kubo's defaults): 256 KiB raw leaves, 174 links per node.
const KUBO = {
  cidVersion: 1,
  rawLeaves: true,
  reduceSingleLeafToSelf: true,
  chunker: fixedSize({ chunkSize: 262144 }),
  layout: balanced({ maxChildrenPerNode: 174 })
}

const helia = withBitswap(withLibp2pLight(createHeliaLight({ routers: [], start: false }), {
  addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: { identify: identify() }
}))
await helia.start()
const fs = unixfs(helia)

async function kuboCid (bytes) {
  let root
  for await (const entry of importer([{ content: bytes }], new MemoryBlockstore(), KUBO)) {
    root = entry.cid
  }
  return root.toString()
}

async function run (msg) {
  switch (msg.cmd) {
    case 'dial':
      await helia.libp2p.dial(multiaddr(msg.addr))
      return {}
    case 'cat': {
      const chunks = []
      const signal = AbortSignal.timeout(msg.timeout_ms ?? 20000)
      for await (const chunk of fs.cat(CID.parse(msg.cid), { signal })) {
        chunks.push(chunk)
      }
      const bytes = Buffer.concat(chunks)
      return {
        sha256: createHash('sha256').update(bytes).digest('hex'),
        length: bytes.length,
        kubo_cid: await kuboCid(bytes)
      }
    }
    case 'add': {
      const bytes = await readFile(msg.path)
      let root
      for await (const entry of importer([{ content: bytes }], helia.blockstore, KUBO)) {
        root = entry.cid
      }
      return { cid: root.toString() }
    }
    case 'import_car': {
      const reader = await CarReader.fromIterable(createReadStream(msg.path))
      const roots = (await reader.getRoots()).map(String)
      await car(helia).import(await CarReader.fromIterable(createReadStream(msg.path)))
      return { roots }
    }
    case 'has':
      return { has: await helia.blockstore.has(CID.parse(msg.cid)) }
    case 'stop':
      await helia.stop()
      reply({ ok: true })
      process.exit(0)
      break
    default:
      throw new Error(`unknown command ${msg.cmd}`)
  }
}

reply({
  ok: true,
  peer_id: helia.libp2p.peerId.toString(),
  addrs: helia.libp2p.getMultiaddrs().map(String)
})

await serve(run)
await helia.stop()
