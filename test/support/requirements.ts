// What some tests need from the machine: root (the full-disk tests mount a tmpfs) and
// Debian's chromium (the browser tests). Where one is missing those tests are skipped with
// the reason, printed once per test file, so that the suite runs from a fresh clone.
// In CI (CI=true) nothing is skipped: CI installs both, so a missing one must fail, and the
// tests then run and fail with their own message.
import { accessSync, constants } from 'node:fs'

/** Debian's chromium, which test/support/browser.ts launches. */
export const CHROMIUM = '/usr/bin/chromium'

const inCI = process.env.CI === 'true'

/** The `skip` option for node:test: the reason to skip (printed), or false to run. */
function skipUnless(problem: () => string | null): () => string | false {
  let reason: string | false | undefined
  return () => {
    if (reason !== undefined) return reason
    const missing = problem()
    reason = missing && !inCI ? `${missing} (with CI=true this is a failure)` : false
    if (reason) console.log(`skipping: ${reason}`)
    return reason
  }
}

/** Skips the tests that need root: they mount a tmpfs. */
export const skipUnlessRoot = skipUnless(() => {
  const uid = process.getuid?.()
  return uid === 0 ? null : `not running as root (uid ${uid}): the full-disk tests mount a tmpfs; run them with sudo npm test -- test/faults-data.test.ts`
})

/** Skips the browser tests where chromium is not installed. */
export const skipUnlessBrowser = skipUnless(() => {
  try {
    accessSync(CHROMIUM, constants.X_OK)
    return null
  } catch {
    return `no browser: the browser tests drive Debian's chromium (${CHROMIUM} is missing; apt-get install chromium)`
  }
})
