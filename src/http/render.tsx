import type { Context } from 'hono'
import type { Child } from 'hono/jsx'
import type { ContentfulStatusCode } from 'hono/utils/http-status'
import { isAdmin, type Principal } from '../auth/index.ts'
import { ViewerContext, type Viewer } from '../../views/viewer.ts'
import type { AppEnv } from './app.tsx'

/** Renders a page for whoever is signed in: the layout and forms read the viewer from context. */
export function render(c: Context<AppEnv>, page: Child, status: ContentfulStatusCode = 200) {
  const principal = c.var.principal as Principal | undefined // unset on the open pages
  const viewer: Viewer | null = principal
    ? { name: principal.name, isAdmin: isAdmin(principal), csrfToken: principal.session?.csrfToken ?? null }
    : null
  c.header('Cache-Control', 'no-store')
  return c.html(<ViewerContext.Provider value={viewer}>{page}</ViewerContext.Provider>, status)
}
