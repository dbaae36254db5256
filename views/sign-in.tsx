import { Layout } from './layout.tsx'

/**
 * Signing in takes a token. A link with `?token=` fills the field but still needs
 * the click: a page on another site must not be able to sign a visitor in as someone else.
 */
export function SignInPage(props: { next: string; token: string; formKey: string; error?: string }) {
  return (
    <Layout title="Sign in">
      <h1>Sign in</h1>
      {props.error ? <p class="error" role="alert">{props.error}</p> : null}
      <form method="post" action="/sign-in" id="sign-in-form">
        <input type="hidden" name="_csrf" value={props.formKey} />
        <input type="hidden" name="next" value={props.next} />
        <p>
          <label>
            API token{' '}
            <input type="password" name="token" value={props.token} required autocomplete="current-password" size={50} aria-label="API token" />
          </label>
        </p>
        <button type="submit">Sign in</button>
      </form>
      <p class="muted">
        An admin creates tokens on the Tokens page. The first admin token is printed in the gateway's log on its first start,
        or set with <code>GATEWAY_ADMIN_TOKEN</code>.
      </p>
    </Layout>
  )
}
