export { detectDialect, SAMPLE_BYTES } from './dialect.ts'
export type { Dialect, DialectOverrides, LineEnding } from './dialect.ts'
export { readRecords } from './read-records.ts'
export type { CsvReadError, CsvReadErrorCode, CsvRecord, ReadOptions } from './read-records.ts'
