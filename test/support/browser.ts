import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { chromium, type Browser, type Page } from 'playwright-core'
import { CHROMIUM } from './requirements.ts'

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

/**
 * Signs the page's browser context in the way a person does: the sign-in link with
 * the token, then the button. The session cookie then serves every page of the context.
 */
export async function signIn(page: Page, gatewayUrl: string, token: string): Promise<void> {
  await page.goto(`${gatewayUrl}/sign-in?token=${encodeURIComponent(token)}&next=/`)
  await Promise.all([page.waitForURL(`${gatewayUrl}/`), page.getByRole('button', { name: 'Sign in' }).click()])
}
