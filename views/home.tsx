import type { Dataset } from '../src/datasets/index.ts'
import type { TaskRow } from '../src/tasks/queries.ts'
import { formatCount, formatTime } from './format.ts'
import { Layout } from './layout.tsx'
import { TaskState } from './task.tsx'

export function HomePage(props: { datasets: Dataset[]; tasks: TaskRow[]; schema: string }) {
  return (
    <Layout title="Datasets">
      <h1>Datasets</h1>
      {props.datasets.length === 0 ? (
        <p class="muted">
          No tables or views in schema <code>{props.schema}</code> can be read. Create one, or grant this role <code>SELECT</code>.
        </p>
      ) : (
        <table>
          <thead>
            <tr><th>Name</th><th>Kind</th><th>Columns</th><th>Rows (estimate)</th></tr>
          </thead>
          <tbody>
            {props.datasets.map((d) => (
              <tr>
                <td><a href={`/datasets/${encodeURIComponent(d.name)}`}>{d.name}</a></td>
                <td>{d.kind}</td>
                <td>{d.columns.length}</td>
                <td>{formatCount(d.rowEstimate)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <h2>Recent tasks</h2>
      {props.tasks.length === 0 ? <p class="muted">No tasks yet.</p> : <TaskTable tasks={props.tasks} />}
    </Layout>
  )
}

function TaskTable(props: { tasks: TaskRow[] }) {
  return (
    <table>
      <thead>
        <tr><th>Task</th><th>Dataset</th><th>State</th><th>Rows</th><th>Created</th></tr>
      </thead>
      <tbody>
        {props.tasks.map((t) => (
          <tr>
            <td><a href={`/tasks/${t.id}`}>{t.kind} {t.id.slice(0, 8)}</a></td>
            <td>{t.dataset}</td>
            <td><TaskState state={t.state} /></td>
            <td>{formatCount(t.progressRows)}</td>
            <td>{formatTime(t.createdAt)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  )
}
