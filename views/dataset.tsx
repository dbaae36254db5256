import type { Dataset } from '../src/datasets/index.ts'
import { formatCount } from './format.ts'
import { CsrfField } from './csrf-field.tsx'
import { Layout } from './layout.tsx'

/** Filter operators offered by the form, in PostgREST's spelling. */
export const FORM_OPERATORS = [
  ['eq', '='], ['neq', '≠'], ['gt', '>'], ['gte', '≥'], ['lt', '<'], ['lte', '≤'],
  ['like', 'like (* wildcard)'], ['ilike', 'ilike (any case)'], ['not.like', 'not like'],
  ['in', 'in list a,b,c'], ['not.in', 'not in list'], ['is', 'is (null, true, false)'], ['not.is', 'is not'],
] as const

export const FILTER_ROWS = 3

export function DatasetPage(props: { dataset: Dataset; error?: string }) {
  const { dataset } = props
  const action = `/datasets/${encodeURIComponent(dataset.name)}/exports`
  // The upload streams as multipart: its CSRF token is the field before the file, which the
  // upload reader checks before storing a byte (htmx also sends it as a header).
  const uploadAction = `/datasets/${encodeURIComponent(dataset.name)}/uploads`
  return (
    <Layout title={dataset.name}>
      <h1>{dataset.name}</h1>
      <p class="muted">
        {dataset.kind} in schema <code>{dataset.schema}</code>
        {dataset.rowEstimate !== null ? ` · about ${formatCount(dataset.rowEstimate)} rows` : ''}
        {dataset.primaryKey ? ` · primary key ${dataset.primaryKey.join(', ')}` : ''}
      </p>
      {props.error ? <p class="error" role="alert">{props.error}</p> : null}

      <h2>Export to CSV</h2>
      <form method="post" action={action} id="export-form">
        <CsrfField />
        <fieldset>
          <legend>Columns (none ticked: all)</legend>
          {dataset.columns.map((c) => (
            <label><input type="checkbox" name="select" value={c.name} /> {c.name}</label>
          ))}
        </fieldset>
        <fieldset class="filters">
          <legend>Filters (all must match)</legend>
          {Array.from({ length: FILTER_ROWS }, (_, i) => (
            <div>
              <select name="filter_column" aria-label={`filter ${i + 1} column`}>
                <option value="">—</option>
                {dataset.columns.map((c) => <option value={c.name}>{c.name}</option>)}
              </select>{' '}
              <select name="filter_op" aria-label={`filter ${i + 1} operator`}>
                {FORM_OPERATORS.map(([value, label]) => <option value={value}>{label}</option>)}
              </select>{' '}
              <input type="text" name="filter_value" aria-label={`filter ${i + 1} value`} />
            </div>
          ))}
        </fieldset>
        <fieldset>
          <legend>Order and size</legend>
          <label>
            Order by{' '}
            <select name="order_column">
              <option value="">—</option>
              {dataset.columns.map((c) => <option value={c.name}>{c.name}</option>)}
            </select>
          </label>
          <label>
            <select name="order_direction" aria-label="order direction">
              <option value="asc">ascending</option>
              <option value="desc">descending</option>
            </select>
          </label>
          <label>Limit <input type="number" name="limit" min="0" /></label>
          <label><input type="checkbox" name="gzip" value="true" /> gzip</label>
          <label title="Cells starting with = + - @ get a leading apostrophe, so a spreadsheet shows them instead of running them">
            <input type="checkbox" name="excelSafe" value="true" /> safe for spreadsheets
          </label>
        </fieldset>
        <button type="submit">Export</button>
      </form>

      {dataset.kind === 'table' && dataset.canImport ? (
        <>
          <h2>Import a CSV file</h2>
          <form method="post" action={uploadAction} enctype="multipart/form-data" id="upload-form"
            hx-post={uploadAction} hx-encoding="multipart/form-data">
            <CsrfField />
            <p class="muted">Any encoding, delimiter or line ending; .gz files too. You will see the first rows and choose the columns before anything is loaded.</p>
            <input type="file" name="file" required aria-label="CSV file" />{' '}
            <button type="submit">Upload</button>
            <progress id="upload-progress" max="100" value="0" aria-label="upload progress"></progress>
          </form>
          <script src="/static/upload-progress.js" defer></script>
        </>
      ) : null}

      <h2>Columns</h2>
      <table>
        <thead><tr><th>Name</th><th>Type</th><th>Nullable</th></tr></thead>
        <tbody>
          {dataset.columns.map((c) => (
            <tr><td>{c.name}</td><td><code>{c.type}</code></td><td>{c.nullable ? 'yes' : 'no'}</td></tr>
          ))}
        </tbody>
      </table>
      <h2>With curl</h2>
      <pre><code>{`curl -i -X POST -H "Authorization: Bearer $SLUICE_TOKEN" '<this server>/api/datasets/${encodeURIComponent(dataset.name)}/exports?limit=1000'`}</code></pre>
    </Layout>
  )
}
