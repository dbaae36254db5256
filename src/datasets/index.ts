export { listDatasets, findDataset, type Dataset, type Column } from './queries.ts'
export { parseRowQuery, splitList, OPERATORS, type RowQuery, type Filter, type OrderTerm } from './filters.ts'
export { buildSelectSql, planSelect, quoteIdent } from './select-sql.ts'
