// Preloaded into the bench's gateway process (`node --import tsx --import ./bench/event-loop-probe.mjs`):
// measures how late its event loop runs timers, so a slow status poll can be blamed on
// the loop (sync work, GC) or cleared of it. Answers `{ probe: 'reset' | 'report' }` over
// the IPC channel; changes nothing else. Plain JavaScript: the piscina worker threads
// inherit the `--import`, before tsx can load TypeScript there. They measure nothing.
import diagnostics from 'node:diagnostics_channel'
import { createHistogram, monitorEventLoopDelay, performance } from 'node:perf_hooks'
import { readFileSync } from 'node:fs'
import { isMainThread } from 'node:worker_threads'

/** This thread's [ns on a CPU, ns runnable but waiting for one] (Linux schedstat), or null. */
function schedstat() {
  try {
    const [onCpu, waiting] = readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ').map(Number)
    return [onCpu, waiting]
  } catch {
    return null
  }
}

if (isMainThread && process.send) {
  const delay = monitorEventLoopDelay({ resolution: 10 })
  delay.enable()
  let utilizationFrom = performance.eventLoopUtilization()
  let schedFrom = schedstat()
  const ms = (ns) => ns / 1e6
  // Inside the gateway: from a request's parsed headers to its response's last byte
  // handed to the socket. The client's latency minus this is time outside our code.
  const served = createHistogram()
  const started = new WeakMap()
  diagnostics.subscribe('http.server.request.start', ({ request }) => started.set(request, process.hrtime.bigint()))
  diagnostics.subscribe('http.server.response.finish', ({ request }) => {
    const start = started.get(request)
    if (start !== undefined) served.record(Math.max(1, Number(process.hrtime.bigint() - start)))
  })

  process.on('message', (message) => {
    if (message?.probe === 'reset') {
      delay.reset()
      served.reset()
      schedFrom = schedstat()
      utilizationFrom = performance.eventLoopUtilization()
      process.send({ probe: 'reset' })
    } else if (message?.probe === 'report') {
      const sched = schedstat()
      const report = {
        // The event loop thread's CPU time, and its time ready to run but waiting for a CPU.
        cpuMs: sched && schedFrom ? ms(sched[0] - schedFrom[0]) : NaN,
        waitingForCpuMs: sched && schedFrom ? ms(sched[1] - schedFrom[1]) : NaN,
        p50Ms: ms(delay.percentile(50)),
        p99Ms: ms(delay.percentile(99)),
        maxMs: ms(delay.max),
        meanMs: ms(delay.mean),
        utilization: performance.eventLoopUtilization(utilizationFrom).utilization,
        servedP50Ms: ms(served.percentile(50)),
        servedP99Ms: ms(served.percentile(99)),
      }
      process.send({ probe: 'report', report })
    }
  })
  // After the listener (adding one refs the channel): it must not keep the gateway alive.
  process.channel?.unref()
}
