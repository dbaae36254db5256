import { Layout } from './layout.tsx'

export function ErrorPage(props: { title: string; message: string }) {
  return (
    <Layout title={props.title}>
      <h1>{props.title}</h1>
      <p class="error">{props.message}</p>
      <p><a href="/">Back to the datasets</a></p>
    </Layout>
  )
}
