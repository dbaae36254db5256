import { useViewer } from './viewer.ts'

/** Every form that changes something carries the session's CSRF token. */
export function CsrfField() {
  const token = useViewer()?.csrfToken
  return token ? <input type="hidden" name="_csrf" value={token} /> : null
}
