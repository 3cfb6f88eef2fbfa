/** A flat Redis reply of field, value pairs (XINFO GROUPS / CONSUMERS rows) as an object. */
export function toObject(flat: unknown[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) out[String(flat[i])] = flat[i + 1];
  return out;
}
