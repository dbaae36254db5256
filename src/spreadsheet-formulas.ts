// Spreadsheets run a cell that starts with = + - @ (or a tab or carriage return,
// which some strip first) as a formula: "CSV injection". A cell like that gets a
// leading apostrophe, which spreadsheets show as text and hide. Plain numbers
// (-4, +1.5e3) are data and stay as they are. One rule for error reports (in JS)
// and excelSafe exports (in SQL): the patterns below are valid both as JavaScript
// and as PostgreSQL regular expressions.

const FORMULA_START = '^[-=+@\\t\\r]'
const PLAIN_NUMBER = '^[+-]?([0-9]+(\\.[0-9]*)?|\\.[0-9]+)([eE][+-]?[0-9]+)?$'

const formulaStart = new RegExp(FORMULA_START)
const plainNumber = new RegExp(PLAIN_NUMBER)

export function neutralizeFormula(value: unknown): unknown {
  if (typeof value !== 'string' || !formulaStart.test(value) || plainNumber.test(value)) return value
  return `'${value}`
}

/** The same rule as a SQL expression over `textExpression` (already of type text). */
export function neutralizeFormulaSql(textExpression: string): string {
  return `case when ${textExpression} ~ '${FORMULA_START}' and ${textExpression} !~ '${PLAIN_NUMBER}' then '''' || ${textExpression} else ${textExpression} end`
}
