import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { chromium, type Browser } from 'playwright-core'

const CHROMIUM = '/usr/bin/chromium'

/**
 * Debian's chromium, headless. As root on a closed network it needs these flags:
 * without the background-networking ones it hangs trying to reach Google.
 */
export async function launchBrowser(): Promise<Browser> {
  assert.ok(existsSync(CHROMIUM), `the browser tests drive Debian's chromium: apt-get install chromium (${CHROMIUM} is missing)`)
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  })
}
