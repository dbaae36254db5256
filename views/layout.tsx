import type { Child } from 'hono/jsx'

/** The page frame. `refreshSeconds` makes the page reload itself when JavaScript is off. */
export function Layout(props: { title: string; refreshSeconds?: number; children: Child }) {
  return (
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <title>{`${props.title} · sluice`}</title>
        <link rel="stylesheet" href="/static/sluice.css" />
        <script src="/static/htmx.min.js" defer></script>
        {props.refreshSeconds ? (
          <noscript>
            <meta http-equiv="refresh" content={String(props.refreshSeconds)} />
          </noscript>
        ) : null}
      </head>
      <body>
        <header>
          <a class="brand" href="/">sluice</a>
          <span class="muted">CSV in and out of PostgreSQL</span>
        </header>
        <main>{props.children}</main>
      </body>
    </html>
  )
}
