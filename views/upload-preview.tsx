import type { Dataset } from '../src/datasets/index.ts'
import type { Preview, PreviewLine } from '../src/imports/index.ts'
import { formatBytes } from './format.ts'
import { CsrfField } from './csrf-field.tsx'
import { Layout } from './layout.tsx'

/** The reading options as the user chose them on this page (raw form values, checked by the server). */
export type ReadingChoice = Partial<Record<'encoding' | 'delimiter' | 'quote' | 'escape' | 'header' | 'headerLines' | 'skipLines' | 'skipFooter' | 'comment', string>>

type Props = {
  dataset: Dataset
  upload: { id: string; fileName: string | null; size: number }
  preview: Preview
  /** Target column proposed for each CSV column, null: skip. */
  proposed: (string | null)[]
  choice: ReadingChoice
  error?: string
}

const DELIMITERS: [string, string][] = [[',', 'comma ,'], [';', 'semicolon ;'], ['\t', 'tab'], ['|', 'pipe |']]
const QUOTES: [string, string][] = [['"', 'double "'], ["'", "single '"], ['none', 'none: quotes are text']]
const ESCAPES: [string, string][] = [['"', 'doubled quote ""'], ['\\', 'backslash \\'], ['none', 'none']]
const ENCODINGS = [
  'utf-8', 'utf-16le', 'utf-16be', 'windows-1252', 'iso-8859-1', 'macintosh', 'windows-1250', 'iso-8859-2',
  'windows-1251', 'koi8-r', 'iso-8859-7', 'gb18030', 'big5', 'shift_jis', 'euc-jp', 'euc-kr',
]
const USE_LABELS: Record<PreviewLine['use'], string> = {
  sep: 'sep= line', skipped: 'skipped', header: 'header', blank: 'blank', comment: 'comment', data: 'row', footer: 'footer',
}
const lineEndingName = (ending: string) => ({ '\n': 'LF (\\n)', '\r\n': 'CRLF (\\r\\n)', '\r': 'CR (\\r)', mixed: 'mixed' })[ending] ?? ending

/** After an upload: what was detected and why, the file's lines as they will be used, and a column mapping to confirm. */
export function UploadPreviewPage(props: Props) {
  const { dataset, upload, preview, proposed, choice } = props
  const { dialect } = preview
  const width = Math.max(preview.columnNames.length, ...preview.rows.map((r) => r.fields.length))
  return (
    <Layout title={`Import into ${dataset.name}`}>
      <h1>Import into <a href={`/datasets/${encodeURIComponent(dataset.name)}`}>{dataset.name}</a></h1>
      <p class="muted">{upload.fileName ?? 'uploaded file'} · {formatBytes(upload.size)}</p>
      {props.error ? <p class="error" role="alert">{props.error}</p> : null}
      {preview.error ? <p class="error">{preview.error}</p> : null}

      <h2>How the file is read</h2>
      <ul class="reasons" id="reasons">{dialect.reasons.map((reason) => <li>{reason}</li>)}</ul>
      <form method="get" action={`/uploads/${upload.id}`} id="dialect-form">
        {/* What detection chose, so the server can tell a field the user changed from one left as shown:
            only changed fields become overrides, the rest are detected again under the new choice. */}
        {Object.entries(shownReading(preview)).map(([name, value]) => (choice[name as keyof ReadingChoice] === undefined ? <input type="hidden" name={`shown.${name}`} value={value} /> : null))}
        <fieldset>
          <legend>Format (change what looks wrong, then read again)</legend>
          <label>Encoding <select name="encoding">
            <option value={dialect.encoding} selected>{dialect.encoding}</option>
            {dialect.encodingAlternatives.length > 0
              ? <optgroup label="also decode this file">{dialect.encodingAlternatives.map((e) => <option value={e}>{e}</option>)}</optgroup>
              : null}
            <optgroup label="others">
              {ENCODINGS.filter((e) => e !== dialect.encoding && !dialect.encodingAlternatives.includes(e)).map((e) => <option value={e}>{e}</option>)}
            </optgroup>
          </select></label>
          <label>Delimiter <select name="delimiter">
            {DELIMITERS.map(([value, label]) => <option value={value} selected={value === dialect.delimiter}>{label}</option>)}
            {DELIMITERS.some(([value]) => value === dialect.delimiter) ? null : <option value={dialect.delimiter} selected>{dialect.delimiter}</option>}
          </select></label>
          <label>Quote <select name="quote">
            {QUOTES.map(([value, label]) => <option value={value} selected={value === (dialect.quote ?? 'none')}>{label}</option>)}
          </select></label>
          <label>Escape <select name="escape">
            {ESCAPES.map(([value, label]) => <option value={value} selected={value === (dialect.escape ?? 'none')}>{label}</option>)}
          </select></label>
          <span class="muted">line ends {lineEndingName(dialect.lineEnding)}{dialect.bom ? ' · BOM' : ''}{dialect.sepLine ? ' · sep= line' : ''}</span>
        </fieldset>
        <fieldset>
          <legend>Where the table is</legend>
          <label>Skip <input class="lines" type="number" min="0" max="10000" name="skipLines" value={String(dialect.skipLines)} /> lines first</label>
          <label>Then <select name="header">
            <option value="true" selected={dialect.header}>a header</option>
            <option value="false" selected={!dialect.header}>no header: rows start at once</option>
          </select></label>
          <label>Header lines <select name="headerLines">
            <option value="1" selected={dialect.headerLines <= 1}>1</option>
            <option value="2" selected={dialect.headerLines === 2}>2, joined cell by cell</option>
          </select></label>
          <label>Footer <select name="skipFooter">
            <option value="auto" selected={(choice.skipFooter ?? 'auto') === 'auto'}>detect ({dialect.footerLines} lines)</option>
            <option value="none" selected={choice.skipFooter === 'none'}>none: load every line</option>
            {/^\d+$/.test(choice.skipFooter ?? '') ? <option value={choice.skipFooter} selected>the last {choice.skipFooter} lines</option> : null}
          </select></label>
          <label>Comment lines start with <select name="comment">
            <option value="none" selected={dialect.comment === null}>nothing (no comments)</option>
            {['#', ';', '/', '%'].map((c) => <option value={c} selected={dialect.comment === c}>{c}</option>)}
          </select></label>{' '}
          <button type="submit" class="secondary">Read again</button>
        </fieldset>
      </form>

      <h2>The file's lines</h2>
      <p class="muted">Grey lines are not loaded: the import counts them as skipped, blank, comment or footer lines.</p>
      <FileLines head={preview.head} tail={preview.tail} />

      <h2>Columns and the first rows as they will load</h2>
      <form method="post" action={`/uploads/${upload.id}/imports`} id="import-form">
        <CsrfField />
        {Object.entries(choice).map(([name, value]) => (value === undefined ? null : <input type="hidden" name={name} value={value} />))}
        <table id="rows">
          <thead>
            <tr><th>line</th>{Array.from({ length: width }, (_, i) => <th>{preview.columnNames[i] ?? `column_${i + 1}`}</th>)}</tr>
            <tr>
              <th></th>
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
            {preview.rows.map((row) => (
              <tr>
                <td class="muted">{row.line}</td>
                {Array.from({ length: width }, (_, i) => <td>{row.fields[i] ?? ''}</td>)}
                {row.problem ? <td class="problem">{row.problem}</td> : null}
              </tr>
            ))}
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

/** The reading as the form shows it, in the form's values. */
export function shownReading({ dialect }: Preview): Required<ReadingChoice> {
  return {
    encoding: dialect.encoding, delimiter: dialect.delimiter, quote: dialect.quote ?? 'none', escape: dialect.escape ?? 'none',
    header: String(dialect.header), headerLines: String(Math.max(1, dialect.headerLines)), skipLines: String(dialect.skipLines),
    skipFooter: 'auto', comment: dialect.comment ?? 'none',
  }
}

function FileLines({ head, tail }: { head: PreviewLine[]; tail: PreviewLine[] }) {
  const lastHead = head.at(-1)?.line ?? 0
  const rest = tail.filter((l) => l.line === null || l.line > lastHead)
  const gap = rest.length > 0 && (rest[0]!.line === null || rest[0]!.line > lastHead + 1)
  return (
    <table class="file-lines" id="file-lines">
      <tbody>
        {head.map((l) => <LineRow line={l} />)}
        {gap ? <tr class="gap"><td colspan={3}>{rest[0]!.line === null ? '… the end of the file:' : `… lines ${lastHead + 1}-${rest[0]!.line! - 1}`}</td></tr> : null}
        {rest.map((l) => <LineRow line={l} />)}
      </tbody>
    </table>
  )
}

const LineRow = ({ line }: { line: PreviewLine }) => (
  <tr class={`use-${line.use}`}>
    <td class="n">{line.line ?? ''}</td>
    <td class="use">{USE_LABELS[line.use]}</td>
    <td>{line.text}</td>
  </tr>
)
