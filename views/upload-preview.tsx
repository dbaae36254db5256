import type { Dataset } from '../src/datasets/index.ts'
import type { Preview } from '../src/imports/index.ts'
import { formatBytes } from './format.ts'
import { CsrfField } from './csrf-field.tsx'
import { Layout } from './layout.tsx'

type Props = {
  dataset: Dataset
  upload: { id: string; fileName: string | null; size: number }
  preview: Preview
  /** Target column proposed for each CSV column (by header name), null: skip. */
  proposed: (string | null)[]
  overrides: { encoding?: string; delimiter?: string; header?: string }
  error?: string
}

const DELIMITERS: [string, string][] = [[',', 'comma ,'], [';', 'semicolon ;'], ['\t', 'tab'], ['|', 'pipe |']]
const ENCODINGS = ['utf-8', 'windows-1252', 'iso-8859-1', 'utf-16le', 'utf-16be', 'iso-8859-7', 'iso-8859-2']
const lineEndingName = (ending: string) => ({ '\n': 'LF (\\n)', '\r\n': 'CRLF (\\r\\n)', '\r': 'CR (\\r)', mixed: 'mixed' })[ending] ?? ending

/** After an upload: what was detected, the first rows as parsed, and a column mapping to confirm. */
export function UploadPreviewPage(props: Props) {
  const { dataset, upload, preview, proposed } = props
  const { dialect } = preview
  const width = Math.max(proposed.length, ...preview.rows.map((r) => r.fields.length))
  const header = dialect.header ? preview.rows[0]?.fields ?? [] : []
  const sample = dialect.header ? preview.rows.slice(1) : preview.rows.slice(0, 10)
  return (
    <Layout title={`Import into ${dataset.name}`}>
      <h1>Import into <a href={`/datasets/${encodeURIComponent(dataset.name)}`}>{dataset.name}</a></h1>
      <p class="muted">{upload.fileName ?? 'uploaded file'} · {formatBytes(upload.size)}</p>
      {props.error ? <p class="error" role="alert">{props.error}</p> : null}
      {preview.error ? <p class="error">{preview.error}</p> : null}

      <form method="get" action={`/uploads/${upload.id}`} id="dialect-form">
        <fieldset>
          <legend>Detected format (change it if it looks wrong)</legend>
          <label>Encoding <select name="encoding">
            {ENCODINGS.map((e) => <option value={e} selected={e === dialect.encoding}>{e}</option>)}
            {ENCODINGS.includes(dialect.encoding) ? null : <option value={dialect.encoding} selected>{dialect.encoding}</option>}
          </select></label>
          <label>Delimiter <select name="delimiter">
            {DELIMITERS.map(([value, label]) => <option value={value} selected={value === dialect.delimiter}>{label}</option>)}
          </select></label>
          <label>First row <select name="header">
            <option value="true" selected={dialect.header}>is a header</option>
            <option value="false" selected={!dialect.header}>is data</option>
          </select></label>
          <span class="muted">Quote {dialect.quote ?? 'none'} · line ends {lineEndingName(dialect.lineEnding)}{dialect.bom ? ' · BOM' : ''}{dialect.sepLine ? ' · sep= line' : ''}</span>{' '}
          <button type="submit" class="secondary">Read again</button>
        </fieldset>
      </form>

      <form method="post" action={`/uploads/${upload.id}/imports`} id="import-form">
        <CsrfField />
        {Object.entries(props.overrides).map(([name, value]) => (value === undefined ? null : <input type="hidden" name={name} value={value} />))}
        <table>
          <thead>
            <tr>{Array.from({ length: width }, (_, i) => <th>{header[i] ?? `column ${i + 1}`}</th>)}</tr>
            <tr>
              {Array.from({ length: width }, (_, i) => (
                <th>
                  <select name="column" aria-label={`target of CSV column ${i + 1}`}>
                    <option value="">skip</option>
                    {dataset.columns.map((c) => <option value={c.name} selected={proposed[i] === c.name}>{c.name}</option>)}
                  </select>
                </th>
              ))}
            </tr>
          </thead>
          <tbody>
            {sample.map((row) => <tr>{Array.from({ length: width }, (_, i) => <td>{row.fields[i] ?? ''}</td>)}</tr>)}
          </tbody>
        </table>
        <fieldset>
          <legend>How to load</legend>
          <label>Mode <select name="mode">
            <option value="insert">insert new rows</option>
            <option value="upsert">upsert (update rows with the same key)</option>
            <option value="replace">replace the table's rows</option>
          </select></label>
          <label>Bad rows <select name="onError">
            <option value="abort">abort: import nothing</option>
            <option value="skip">skip them, import the rest</option>
          </select></label>
          <label><input type="checkbox" name="dryRun" value="true" /> dry run (check only)</label>
        </fieldset>
        <button type="submit">Start import</button>
      </form>
    </Layout>
  )
}
