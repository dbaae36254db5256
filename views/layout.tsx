import type { Child } from 'hono/jsx'
import { CsrfField } from './csrf-field.tsx'
import { useViewer } from './viewer.ts'

// htmx must not inject its own <style> or evaluate strings: the CSP allows neither.
const HTMX_CONFIG = JSON.stringify({ includeIndicatorStyles: false, allowEval: false, allowScriptTags: false })

/** The page frame. `refreshSeconds` makes the page reload itself when JavaScript is off. */
export function Layout(props: { title: string; refreshSeconds?: number; children: Child }) {
  const viewer = useViewer()
  // htmx sends the CSRF token as a header on every request it makes from this page.
  const csrfHeaders = viewer?.csrfToken ? { 'hx-headers': JSON.stringify({ 'X-CSRF-Token': viewer.csrfToken }) } : {}
  return (
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <meta name="htmx-config" content={HTMX_CONFIG} />
        <title>{`${props.title} · sluice`}</title>
        <link rel="stylesheet" href="/static/sluice.css" />
        <script src="/static/htmx.min.js" defer></script>
        {props.refreshSeconds ? (
          <noscript>
            <meta http-equiv="refresh" content={String(props.refreshSeconds)} />
          </noscript>
        ) : null}
      </head>
      <body {...csrfHeaders}>
        <header>
          <a class="brand" href="/">sluice</a>
          <span class="muted">CSV in and out of PostgreSQL</span>
          {viewer ? (
            <nav>
              {viewer.isAdmin ? <a href="/tokens">Tokens</a> : null}
              <span class="muted">signed in as {viewer.name}</span>
              {viewer.csrfToken ? (
                <form method="post" action="/sign-out" class="inline">
                  <CsrfField />
                  <button type="submit" class="link">Sign out</button>
                </form>
              ) : null}
            </nav>
          ) : null}
        </header>
        <main>{props.children}</main>
      </body>
    </html>
  )
}
