export { createApp, type Deps, type AppEnv } from './app.tsx'
