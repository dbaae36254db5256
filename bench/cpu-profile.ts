// Summarises the .cpuprofile files Node writes with --cpu-prof (one per thread): for each,
// its total sampled time and the functions with the most self time, so a bench run says
// where a thread spent its CPU. Usage: node --import tsx bench/cpu-profile.ts DIR [TOP]
import { readdir, readFile } from 'node:fs/promises'
import path from 'node:path'

type ProfileNode = { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }
type Profile = { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[]; startTime: number; endTime: number }

const dir = process.argv[2]
const top = Number(process.argv[3] ?? 25)
if (!dir) {
  console.error('usage: node --import tsx bench/cpu-profile.ts DIR [TOP]')
  process.exit(1)
}

for (const name of (await readdir(dir)).filter((n) => n.endsWith('.cpuprofile')).sort()) {
  const profile = JSON.parse(await readFile(path.join(dir, name), 'utf8')) as Profile
  summarise(name, profile)
}

function summarise(name: string, profile: Profile) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  const selfMs = new Map<number, number>()
  profile.samples.forEach((id, i) => selfMs.set(id, (selfMs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0) / 1000))
  const byFunction = new Map<string, number>()
  let busy = 0
  for (const [id, ms] of selfMs) {
    const { functionName, url, lineNumber } = byId.get(id)!.callFrame
    if (functionName === '(idle)') continue
    busy += ms
    const where = url ? `${path.relative(process.cwd(), url.replace(/^file:\/\//, ''))}:${lineNumber + 1}` : ''
    const key = `${functionName || '(anonymous)'} ${where}`.trim()
    byFunction.set(key, (byFunction.get(key) ?? 0) + ms)
  }
  const wall = (profile.endTime - profile.startTime) / 1000
  console.log(`\n${name}: ${(wall / 1000).toFixed(1)} s sampled, ${(busy / 1000).toFixed(1)} s not idle`)
  for (const [key, ms] of [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    console.log(`  ${(ms / 1000).toFixed(2).padStart(7)} s ${((ms / busy) * 100).toFixed(1).padStart(5)}%  ${key}`)
  }
}
