import { createContext, useContext } from 'hono/jsx'

/** Who the page is rendered for; null on the sign-in and error pages of signed-out visitors. */
export type Viewer = { name: string; isAdmin: boolean; csrfToken: string | null }

// Handed down by context rather than through every component's props: the layout
// and each form need it, the components between them do not.
export const ViewerContext = createContext<Viewer | null>(null)
export const useViewer = () => useContext(ViewerContext)
