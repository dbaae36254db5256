import type { TaskRow } from '../src/tasks/queries.ts'
import { formatBytes, formatCount, formatTime } from './format.ts'
import { CsrfField } from './csrf-field.tsx'
import { Layout } from './layout.tsx'

export function TaskState(props: { state: string }) {
  return <span class={`state state-${props.state}`}>{props.state}</span>
}

const isFinished = (t: TaskRow) => t.state === 'succeeded' || t.state === 'failed' || t.state === 'cancelled'

export function TaskPage(props: { task: TaskRow; downloadUrl: string; shareUrl: string | null }) {
  const { task } = props
  return (
    <Layout title={`${task.kind} of ${task.dataset}`} refreshSeconds={isFinished(task) ? undefined : 2}>
      <h1>
        {task.kind === 'export' ? 'Export' : 'Import'} of <a href={`/datasets/${encodeURIComponent(task.dataset)}`}>{task.dataset}</a>
      </h1>
      <p class="muted">Task <code>{task.id}</code> · created {formatTime(task.createdAt)}</p>
      <TaskStatus task={task} downloadUrl={props.downloadUrl} autoDownload={false} />
      {props.shareUrl ? (
        <details>
          <summary>Link for sharing or curl, without signing in</summary>
          <p><code id="share-link">{props.shareUrl}</code></p>
          <p class="muted">Anyone with this link can download the file until the time in it passes or the token that made it is revoked.</p>
        </details>
      ) : null}
      <p><a href="/">All datasets and tasks</a></p>
    </Layout>
  )
}

/**
 * The part of the task page that htmx polls. Finished, it stops polling; the first
 * poll that sees success also asks (once) for the redirect to the file.
 */
export function TaskStatus(props: { task: TaskRow; downloadUrl: string; autoDownload: boolean }) {
  const { task } = props
  const statusUrl = `/tasks/${task.id}/status`
  const percent = task.state === 'succeeded' ? 100 : Math.floor(task.progressPercent)
  // An export's percent rests on the planner's row estimate, which can be far off
  // ("1,731 rows of about 543", stuck at 99%): without one, or once past it, the bar
  // only says "working" rather than a number that is wrong.
  const hasPercent = task.kind !== 'export' || (task.progressTotal !== null && task.progressTotal > 0 && task.progressRows <= task.progressTotal)
  return (
    <section id="task-status" aria-live="polite" {...(isFinished(task) ? {} : { 'hx-get': statusUrl, 'hx-trigger': 'every 1s', 'hx-swap': 'outerHTML' })}>
      <p>State: <TaskState state={task.state} />{task.attempts > 1 ? <span class="muted"> (attempt {task.attempts})</span> : null}</p>
      {task.state === 'queued' || task.state === 'running' ? (
        <>
          <progress max="100" value={hasPercent ? String(percent) : undefined} aria-label="progress">{hasPercent ? `${percent}%` : 'working'}</progress>
          <p>
            {hasPercent ? `${percent}% · ` : ''}{formatCount(task.progressRows)} rows
            {task.kind === 'export'
              ? `${hasPercent ? ` of about ${formatCount(task.progressTotal)}` : ''} · ${formatBytes(task.progressBytes)}`
              : ` · ${formatBytes(task.progressBytes)} of ${formatBytes(task.progressTotal)} read`}
          </p>
          {task.cancelRequestedAt ? (
            <p class="muted">Cancelling…</p>
          ) : (
            <form method="post" action={`/tasks/${task.id}/cancel`}>
              <CsrfField />
              <button type="submit" class="secondary">Cancel</button>
            </form>
          )}
          {task.error ? <p class="muted">The previous attempt failed and will be retried: {task.error}</p> : null}
        </>
      ) : null}
      {task.kind === 'import' && isFinished(task) ? <ImportResult task={task} reportUrl={props.downloadUrl} /> : null}
      {task.kind === 'export' && task.state === 'succeeded' && task.resultKey ? (
        <>
          <p>
            Done: {formatCount(task.progressRows)} rows. Download{' '}
            <a id="download-link" href={props.downloadUrl} download>{task.resultName}</a> ({formatBytes(task.resultSize)}).
          </p>
          <p class="muted">Available until {formatTime(task.resultExpiresAt)}. SHA-256 <code>{task.resultSha256}</code></p>
          {props.autoDownload ? <span hx-get={`${statusUrl}?go=download`} hx-trigger="load" hx-swap="none"></span> : null}
        </>
      ) : null}
      {task.state === 'failed' ? (
        <>
          <p class="error" id="task-error">{task.error ?? 'The task failed.'}</p>
          <p class="muted">
            {task.attempts} attempt{task.attempts === 1 ? '' : 's'}{task.errorCode ? <> · code <code>{task.errorCode}</code></> : null}
            {task.finishedAt ? ` · ended ${formatTime(task.finishedAt)}` : ''}
          </p>
        </>
      ) : null}
      {task.state === 'cancelled' ? <p>This task was cancelled; nothing was kept.</p> : null}
      {task.resultExpiredAt ? (
        <p id="file-expired">The file {task.resultName ? <code>{task.resultName}</code> : null} was kept until {formatTime(task.resultExpiresAt)} and has been deleted.</p>
      ) : null}
      {task.state === 'failed' || task.state === 'cancelled' ? (
        <form method="post" action={`/tasks/${task.id}/retry`} id="retry-form">
          <CsrfField />
          <button type="submit" class="secondary">Run it again</button>
        </form>
      ) : null}
    </section>
  )
}

type ImportDetails = {
  rows?: number; inserted?: number; updated?: number; deleted?: number; failed?: number; dryRun?: boolean
  errors?: { line: number; message: string }[]
  dialect?: { encoding: string; delimiter: string; header: boolean; reasons?: string[] }
  lines?: LineSummary
}

type LineSummary = {
  total: number; sepLine: number; skipped: number; header: number; blank: number; comment: number; footer: number
  loaded: number; failed: number; skippedRange: string | null; footerRange: string | null
}

const DELIMITER_NAMES: Record<string, string> = { ',': 'comma', ';': 'semicolon', '\t': 'tab', '|': 'pipe' }

function ImportResult(props: { task: TaskRow; reportUrl: string }) {
  const details = props.task.details as ImportDetails
  if (details.rows === undefined) return null
  return (
    <div id="import-result">
      <p>
        {details.dryRun ? 'Dry run, nothing was changed: ' : ''}
        {formatCount(details.rows)} rows read · {formatCount(details.inserted)} inserted · {formatCount(details.updated)} updated
        {details.deleted ? ` · ${formatCount(details.deleted)} replaced` : ''} · {formatCount(details.failed)} with errors
      </p>
      {details.dialect ? (
        <p class="muted">Read as {details.dialect.encoding}, {DELIMITER_NAMES[details.dialect.delimiter] ?? details.dialect.delimiter}-separated, {details.dialect.header ? 'with' : 'without'} a header row.</p>
      ) : null}
      {details.lines ? <LineAccount lines={details.lines} dryRun={details.dryRun ?? false} state={props.task.state} /> : null}
      {details.dialect?.reasons && details.dialect.reasons.length > 0 ? (
        <details><summary>How the file was read</summary><ul>{details.dialect.reasons.map((r) => <li>{r}</li>)}</ul></details>
      ) : null}
      {details.errors && details.errors.length > 0 ? (
        <>
          <table>
            <thead><tr><th>Line</th><th>Problem</th></tr></thead>
            <tbody>{details.errors.map((e) => <tr><td>{e.line}</td><td>{e.message}</td></tr>)}</tbody>
          </table>
          {props.task.resultKey ? (
            <p>
              <a id="report-link" href={props.reportUrl} download>Download the error report</a>: the failing rows with
              their line and error, to fix in a spreadsheet and upload again.
            </p>
          ) : null}
        </>
      ) : null}
    </div>
  )
}

/** Where every line of the file went: one sentence, and the counts that add up to the total. */
function LineAccount({ lines, dryRun, state }: { lines: LineSummary; dryRun: boolean; state: string }) {
  const kept = state === 'succeeded' && !dryRun
  const parts: [string, number, string | null][] = [
    ['sep= line', lines.sepLine, lines.sepLine ? '1' : null],
    ['skipped before the table', lines.skipped, lines.skippedRange],
    ['header', lines.header, null],
    ['blank', lines.blank, null],
    ['comment', lines.comment, null],
    ['footer after the table', lines.footer, lines.footerRange],
    [kept ? 'loaded' : 'of rows that passed (not written)', lines.loaded, null],
    ['of rows that failed', lines.failed, null],
  ]
  const notLoaded = parts.filter(([name, n]) => n > 0 && !name.startsWith('loaded') && !name.startsWith('of rows'))
  return (
    <div id="line-account">
      <p>
        The file has {formatCount(lines.total)} lines: {formatCount(lines.loaded)} {kept ? 'loaded' : 'in rows that passed'}
        {lines.failed ? `, ${formatCount(lines.failed)} in rows that failed` : ''}
        {notLoaded.length > 0 ? `, and ${notLoaded.map(([name, n, range]) => `${formatCount(n)} ${name}${range ? ` (line${range.includes('-') ? 's' : ''} ${range})` : ''}`).join(', ')}` : ''}.
      </p>
      <table class="line-account">
        <tbody>
          {parts.filter(([, n]) => n > 0).map(([name, n, range]) => <tr><td>{name}</td><td>{formatCount(n)}</td><td class="muted">{range ? `line${range.includes('-') ? 's' : ''} ${range}` : ''}</td></tr>)}
          <tr><th>total</th><th>{formatCount(lines.total)}</th><th></th></tr>
        </tbody>
      </table>
    </div>
  )
}
