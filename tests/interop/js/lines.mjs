// The stdin/stdout protocol of the interop peers: one JSON object per line each way.
import { createInterface } from 'node:readline'

export function reply (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

// Answer each command line with {"ok":true,...run's result} or {"ok":false,"error":TEXT}.
export async function serve (run) {
  for await (const line of createInterface({ input: process.stdin })) {
    if (line.trim() === '') continue
    try {
      reply({ ok: true, ...(await run(JSON.parse(line))) })
    } catch (err) {
      reply({ ok: false, error: String(err?.stack ?? err) })
    }
  }
}
