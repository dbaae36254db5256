import type { TokenRow } from '../src/auth/index.ts'
import { CsrfField } from './csrf-field.tsx'
import { formatTime } from './format.ts'
import { Layout } from './layout.tsx'

export function TokensPage(props: { tokens: TokenRow[]; created?: { name: string; secret: string }; error?: string }) {
  return (
    <Layout title="Tokens">
      <h1>API tokens</h1>
      {props.created ? (
        <div role="status">
          <p>Token <strong>{props.created.name}</strong> created. Copy it now: it is not stored and cannot be shown again.</p>
          <code class="token" id="new-token">{props.created.secret}</code>
        </div>
      ) : null}
      {props.error ? <p class="error" role="alert">{props.error}</p> : null}

      <h2>New token</h2>
      <form method="post" action="/tokens" id="new-token-form">
        <CsrfField />
        <label>Name <input type="text" name="name" required maxlength={100} placeholder="nightly export script" /></label>
        <label>
          Role{' '}
          <select name="role">
            <option value="user">user: sees only its own tasks</option>
            <option value="admin">admin: everything, and tokens</option>
          </select>
        </label>
        <label>PostgreSQL role <input type="text" name="dbRole" placeholder="(the gateway's own)" /></label>
        <button type="submit">Create</button>
      </form>

      <h2>Tokens</h2>
      <table>
        <thead><tr><th>Name</th><th>Role</th><th>PostgreSQL role</th><th>Created</th><th>Last used</th><th></th></tr></thead>
        <tbody>
          {props.tokens.map((t) => (
            <tr>
              <td>{t.name}</td>
              <td>{t.role}</td>
              <td>{t.dbRole ?? <span class="muted">gateway's own</span>}</td>
              <td>{formatTime(t.createdAt)}</td>
              <td>{t.lastUsedAt ? formatTime(t.lastUsedAt) : 'never'}</td>
              <td>
                {t.revokedAt ? (
                  <span class="muted">revoked {formatTime(t.revokedAt)}</span>
                ) : (
                  <form method="post" action={`/tokens/${t.id}/revoke`} class="inline">
                    <CsrfField />
                    <button type="submit" class="secondary">Revoke</button>
                  </form>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </Layout>
  )
}
