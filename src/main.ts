import { loadConfig } from './config.ts'
import { startGateway } from './gateway.ts'

const config = loadConfig()
const gateway = await startGateway(config).catch((err: Error) => {
  console.error(`sluice could not start: ${err.message}`)
  process.exit(1)
})
console.log(`sluice is running: open ${gateway.url}/`)
if (config.databaseUrl) console.log(`database: ${new URL(config.databaseUrl).host}`)

let signals = 0
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    // A second Ctrl-C means "now": skip the grace period.
    if (++signals > 1) process.exit(130)
    console.log(`${signal}: finishing running tasks, then stopping…`)
    gateway.stop(config.shutdownGraceSeconds * 1000).then(
      () => process.exit(0),
      (err: Error) => {
        console.error(`could not stop cleanly: ${err.message}`)
        process.exit(1)
      },
    )
  })
}
