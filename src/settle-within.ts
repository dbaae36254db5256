/**
 * Waits for `work` to settle (resolve or reject), `ms` at most; true if it did.
 * For shutdown paths, which a database that does not answer must not hold.
 */
export async function settleWithin(work: Promise<unknown> | null, ms: number): Promise<boolean> {
  if (!work) return true
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<false>((resolve) => { timer = setTimeout(() => resolve(false), ms) })
  try {
    return await Promise.race([work.then(() => true, () => true), timeout])
  } finally {
    clearTimeout(timer)
  }
}
