/** Orders Redis stream ids (`<ms>-<seq>`) numerically without losing precision (and without allocating). */
export function compareEntryIds(a: string, b: string): number {
  if (a === b) return 0;
  const aDash = a.indexOf('-');
  const bDash = b.indexOf('-');
  const aMs = aDash < 0 ? a.length : aDash;
  const bMs = bDash < 0 ? b.length : bDash;
  if (aMs !== bMs) return aMs < bMs ? -1 : 1;
  for (let i = 0; i < aMs; i++) {
    const d = a.charCodeAt(i) - b.charCodeAt(i);
    if (d !== 0) return d < 0 ? -1 : 1;
  }
  const aSeq = aDash < 0 ? 0 : a.length - aDash - 1;
  const bSeq = bDash < 0 ? 0 : b.length - bDash - 1;
  if (aSeq !== bSeq) return aSeq < bSeq ? -1 : 1;
  for (let i = 1; i <= aSeq; i++) {
    const d = a.charCodeAt(aDash + i) - b.charCodeAt(bDash + i);
    if (d !== 0) return d < 0 ? -1 : 1;
  }
  return 0;
}
