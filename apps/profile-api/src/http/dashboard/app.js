// The redsource dashboard: polls dashboard/status.json every second and draws it.
// Every text taken from the server goes into the page through textContent (never innerHTML),
// and numbers into SVG through setAttribute, so stream or consumer names cannot inject markup.
'use strict';

const POLL_MS = 1000;
/** How far back the rate sparkline reaches, its shortest span, and how many bars it has at most. */
const WINDOW_MS = 5 * 60 * 1000;
const MIN_SPAN_MS = 10 * 1000;
const MAX_BUCKETS = 60;
/** A consumer silent this long is shown as stale. */
const STALE_HEARTBEAT_MS = 15 * 1000;
/** The longest a Retry-After makes the page wait. */
const MAX_RETRY_MS = 60 * 1000;

const numberFormat = new Intl.NumberFormat('en-US');
const rateFormat = new Intl.NumberFormat('en-US', { maximumFractionDigits: 1 });

/** stream name → { root, fields, spark, progress, consumers } */
const cards = new Map();
/** stream name → [{ at, applied }] over the window, oldest first */
const history = new Map();
/** The last reading shown (its server time), for the stale notice; whether the server's history was taken in. */
let lastShownAt;
let haveHistory = false;

const $ = (id) => document.getElementById(id);

function formatNumber(value) {
  return typeof value === 'number' && Number.isFinite(value) ? numberFormat.format(value) : '–';
}

/** A count from a status scan that stopped at its limit is a lower bound: "≥20,000". */
function formatCount(value, exact) {
  const text = formatNumber(value);
  return exact === false && text !== '–' ? `≥${text}` : text;
}

function formatMs(ms) {
  if (typeof ms !== 'number' || !Number.isFinite(ms)) return '–';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 3_600_000) return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
  return `${(ms / 3_600_000).toFixed(1)} h`;
}

function formatBatch(ms) {
  return typeof ms === 'number' && Number.isFinite(ms) ? (ms < 10 ? ms.toFixed(2) : String(Math.round(ms))) : '–';
}

/** Sets a figure's text, and its raw number in data-value for anyone reading the page. */
function setField(el, text, raw) {
  if (el.textContent !== text) el.textContent = text;
  if (raw === undefined) delete el.dataset.value;
  else el.dataset.value = String(raw);
}

function setConnection(state, text) {
  const el = $('connection');
  el.dataset.state = state;
  el.textContent = text;
}

function createCard(name) {
  const template = /** @type {HTMLTemplateElement} */ ($('stream-template'));
  const root = /** @type {HTMLElement} */ (template.content.firstElementChild.cloneNode(true));
  root.dataset.stream = name;
  const fields = {};
  for (const el of root.querySelectorAll('[data-field]')) fields[el.dataset.field] = el;
  fields.stream.textContent = name;
  // Read-only list of the stream's dead letters, and the command that lists (and retries or drops) them.
  fields.dlqLink.setAttribute('href', `dashboard/dead-letters.json?stream=${encodeURIComponent(name)}`);
  fields.dlqCommand.textContent = `redsource dlq list ${/^[A-Za-z0-9_.:-]+$/.test(name) ? name : `'${name.replace(/'/g, "'\\''")}'`}`;
  const card = {
    root,
    fields,
    line: root.querySelector('.spark .line'),
    area: root.querySelector('.spark .area'),
    progressFill: root.querySelector('.progress .fill'),
    progressBar: root.querySelector('.progress .bar'),
    progressText: root.querySelector('.progress .progress-text'),
    consumers: root.querySelector('.consumers tbody'),
    partitions: root.querySelector('.partitions tbody'),
  };
  cards.set(name, card);
  return card;
}

/** Keeps the applied totals of the window; a total that went down (a rebuild reset it) starts the series again. */
function record(name, at, applied) {
  let samples = history.get(name);
  if (!samples) history.set(name, (samples = []));
  const last = samples[samples.length - 1];
  if (last && applied < last.applied) samples.length = 0;
  if (!last || at > last.at) samples.push({ at, applied });
  while (samples.length > 0 && samples[0].at < at - WINDOW_MS) samples.shift();
  return samples;
}

/**
 * Applied per second in buckets, from successive totals; null where no interval ends. The chart spans
 * the samples kept (at least 10 s, at most the window), so a page opened a moment ago shows a chart too.
 */
function rates(samples, now) {
  const span = samples.length > 0 ? now - samples[0].at : 0;
  const windowMs = Math.min(WINDOW_MS, Math.max(MIN_SPAN_MS, span));
  const count = Math.min(MAX_BUCKETS, Math.max(1, Math.round(windowMs / POLL_MS)));
  const bucketMs = windowMs / count;
  const start = now - windowMs;
  const buckets = Array.from({ length: count }, () => ({ entries: 0, ms: 0 }));
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1];
    const b = samples[i];
    const index = Math.min(count - 1, Math.floor((b.at - start) / bucketMs));
    if (index < 0) continue;
    buckets[index].entries += b.applied - a.applied;
    buckets[index].ms += b.at - a.at;
  }
  return buckets.map((bucket) => (bucket.ms > 0 ? (bucket.entries * 1000) / bucket.ms : null));
}

/** The rate over the last few seconds. */
function currentRate(samples) {
  const last = samples[samples.length - 1];
  if (!last) return undefined;
  let first = last;
  for (let i = samples.length - 2; i >= 0 && last.at - samples[i].at <= 5_000; i--) first = samples[i];
  if (first === last) return undefined;
  return ((last.applied - first.applied) * 1000) / (last.at - first.at);
}

function drawSpark(card, series) {
  const width = 300;
  const height = 48;
  const peak = Math.max(0, ...series.filter((v) => v !== null));
  const top = Math.max(1, peak);
  const step = width / series.length;
  let line = '';
  let area = '';
  let runStart;
  let previousX;
  const close = () => {
    if (runStart !== undefined) area += `L${previousX.toFixed(1)},${height}L${runStart.toFixed(1)},${height}Z`;
    runStart = undefined;
  };
  series.forEach((value, i) => {
    if (value === null) return close();
    const x = i * step + step / 2;
    const y = height - 2 - (value / top) * (height - 4);
    const point = `${x.toFixed(1)},${y.toFixed(1)}`;
    if (runStart === undefined) {
      runStart = x;
      line += `M${point}`;
      area += `M${point}`;
    } else {
      line += `L${point}`;
      area += `L${point}`;
    }
    previousX = x;
  });
  close();
  card.line.setAttribute('d', line);
  card.area.setAttribute('d', area);
  return peak;
}

function tableRow(cells) {
  const row = document.createElement('tr');
  for (const text of cells) {
    const cell = document.createElement('td');
    cell.textContent = text;
    // Cut to the column's width: the whole text on hover.
    cell.title = text;
    row.append(cell);
  }
  return row;
}

/** Partition numbers in short: [0, 1, 2, 3, 5, 7, 8] → "0–3, 5, 7–8". */
function ranges(numbers) {
  const sorted = [...numbers].sort((a, b) => a - b);
  const parts = [];
  for (let i = 0; i < sorted.length; i++) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j] + 1) j++;
    parts.push(j > i ? `${sorted[i]}–${sorted[j]}` : String(sorted[i]));
    i = j;
  }
  return parts.join(', ');
}

/** A one-cell row saying the table is empty. */
function noneRow(text, columns) {
  const row = document.createElement('tr');
  row.className = 'none';
  const cell = document.createElement('td');
  cell.colSpan = columns;
  cell.textContent = text;
  row.append(cell);
  return row;
}

function consumerRow(consumer) {
  const stale = typeof consumer.heartbeatAgeMs === 'number' && consumer.heartbeatAgeMs > STALE_HEARTBEAT_MS;
  const row = tableRow([
    consumer.name,
    consumer.member === undefined ? '?' : consumer.member ? 'yes' : 'no',
    consumer.partitions.length > 0 ? ranges(consumer.partitions) : '–',
    consumer.heartbeatAgeMs === undefined ? 'never' : `${formatMs(consumer.heartbeatAgeMs)} ago`,
    formatNumber(consumer.stats ? consumer.stats.applied : undefined),
  ]);
  row.dataset.consumer = consumer.name;
  row.dataset.stale = String(stale);
  row.dataset.member = String(consumer.member === true);
  return row;
}

function partitionRow(partition) {
  const row = tableRow([
    String(partition.partition),
    partition.owner === undefined ? 'free' : partition.owner,
    partition.cursor,
    formatCount(partition.unapplied, partition.unappliedExact),
    partition.oldestUnappliedMs === undefined ? '–' : formatMs(partition.oldestUnappliedMs),
  ]);
  row.dataset.partition = String(partition.partition);
  row.dataset.owner = partition.owner === undefined ? '' : partition.owner;
  row.dataset.free = String(partition.owner === undefined);
  row.dataset.behind = String(partition.unapplied > 0);
  return row;
}

function renderStream(status, at) {
  const card = cards.get(status.stream) || createCard(status.stream);
  const f = card.fields;
  const rebuilding = status.heldByRebuild === true;
  const recentError = typeof status.lastErrorAt === 'number' && at - status.lastErrorAt < 60_000;
  const waiting = status.waiting;
  // Not yet applied: the entries of each partition after its cursor.
  const backlog = typeof status.backlog === 'number' ? status.backlog : status.unapplied;
  const ungrouped = status.lag === undefined && status.length > 0;
  const state = rebuilding
    ? 'rebuilding'
    : waiting
      ? 'waiting'
      : recentError
        ? 'error'
        : ungrouped
          ? 'ungrouped'
          : backlog > 0
            ? 'behind'
            : 'ok';
  f.state.dataset.state = state;
  setField(
    f.state,
    {
      rebuilding: 'held by a rebuild',
      waiting: `waiting on Redis (${waiting ? waiting.kind : ''})`,
      error: 'errors',
      ungrouped: 'no group yet',
      behind: 'catching up',
      ok: 'up to date',
    }[state],
  );
  // Why nothing moves: Redis refuses writes or is unreachable; processing resumes by itself when it accepts them.
  f.waiting.hidden = !waiting;
  f.waiting.textContent = waiting
    ? `waiting on Redis${typeof waiting.since === 'number' ? ` for ${formatMs(at - waiting.since)}` : ''}: ${waiting.reason}` +
      (waiting.consumers.length > 0 ? ` (reported by ${waiting.consumers.join(', ')})` : '')
    : '';

  setField(f.length, formatNumber(status.length), status.length);
  setField(f.lag, formatCount(status.lag, status.unappliedExact), status.lag);
  setField(f.unapplied, formatCount(status.unapplied, status.unappliedExact), status.unapplied);
  setField(
    f.oldestUnapplied,
    status.oldestUnappliedMs === undefined ? '–' : formatMs(status.oldestUnappliedMs),
    status.oldestUnappliedMs,
  );
  setField(f.applied, formatNumber(status.applied), status.applied);
  setField(f.skipped, formatNumber(status.skipped), status.skipped);
  setField(f.deadLettered, formatNumber(status.deadLettered), status.deadLettered);
  setField(f.deadLetters, formatNumber(status.deadLetters), status.deadLetters);
  f.deadLetters.dataset.alert = String(status.deadLetters > 0);
  setField(f.members, formatNumber(status.members), status.members);
  setField(
    f.batch,
    status.avgBatchMs === undefined && status.lastBatchMs === undefined
      ? '–'
      : `${formatBatch(status.avgBatchMs)} / ${formatBatch(status.lastBatchMs)} ms`,
  );

  const samples = record(status.stream, at, status.applied);
  const rate = currentRate(samples);
  setField(f.rate, rate === undefined ? '–' : rateFormat.format(rate), rate);
  const peak = drawSpark(card, rates(samples, at));
  const span = samples.length > 1 ? samples[samples.length - 1].at - samples[0].at : 0;
  setField(
    f.rateNote,
    span > 0 ? `last ${formatMs(span)} (up to 5 min) · peak ${rateFormat.format(peak)}/s` : 'collecting…',
  );

  // Catch-up or rebuild progress: the share of the stream the snapshots have applied.
  const progress = f.progress;
  if (rebuilding || backlog > 0) {
    progress.hidden = false;
    card.progressBar.dataset.indeterminate = String(rebuilding);
    const share = status.length > 0 ? Math.max(0, status.length - backlog) / status.length : 0;
    card.progressFill.style.width = rebuilding ? '' : `${(share * 100).toFixed(1)}%`;
    card.progressText.textContent = rebuilding
      ? 'snapshots held while a rebuild swaps them in'
      : `${formatCount(backlog, status.unappliedExact)} to apply · ${(share * 100).toFixed(1)}% applied`;
  } else {
    progress.hidden = true;
  }

  f.lastError.hidden = !status.lastError;
  f.lastError.textContent = status.lastError
    ? `last error ${new Date(status.lastErrorAt || 0).toLocaleTimeString()}: ${status.lastError}`
    : '';

  const partitions = status.partitions || [];
  const owned = partitions.filter((p) => p.owner !== undefined).length;
  setField(f.partitionSummary, `${owned} of ${formatNumber(status.partitionCount)} owned`, owned);
  card.partitions.replaceChildren(...partitions.map(partitionRow));

  const rows = status.consumers.map(consumerRow);
  if (rows.length === 0) rows.push(noneRow('no consumers in the group', 5));
  card.consumers.replaceChildren(...rows);
  return card.root;
}

function renderRebuild(rebuild, at) {
  const section = $('rebuild');
  if (!rebuild || rebuild.phase === 'done') {
    section.hidden = true;
    return;
  }
  section.hidden = false;
  $('rebuild-phase').textContent = rebuild.phase;
  const share = rebuild.total > 0 ? Math.min(1, rebuild.done / rebuild.total) : 0;
  $('rebuild-fill').style.width = `${(share * 100).toFixed(1)}%`;
  const elapsed =
    typeof rebuild.startedAt === 'number' && rebuild.startedAt > 0
      ? ` · running ${formatMs(at - rebuild.startedAt)}`
      : '';
  $('rebuild-text').textContent =
    `${formatNumber(rebuild.done)} of ${formatNumber(rebuild.total)} entries (${(share * 100).toFixed(1)}%)${elapsed}`;
}

function render(data) {
  // The server's applied totals of the last minutes: a page just opened shows the recent rate at once.
  for (const { stream, samples } of data.history || []) {
    if (history.has(stream)) continue;
    for (const [at, applied] of samples) if (at < data.at) record(stream, at, applied);
  }
  const main = $('streams');
  const present = new Set();
  const roots = data.streams.map((status) => {
    present.add(status.stream);
    return renderStream(status, data.at);
  });
  for (const name of [...cards.keys()]) {
    if (!present.has(name)) {
      cards.delete(name);
      history.delete(name);
    }
  }
  // Re-append only when the set or order of cards changed, so the page does not flicker.
  const same = main.children.length === roots.length && roots.every((root, i) => main.children[i] === root);
  if (!same) main.replaceChildren(...roots);
  $('empty').hidden = roots.length > 0;
  renderRebuild(data.rebuild, data.at);
  $('updated').textContent = `updated ${new Date(data.at).toLocaleTimeString()}`;
}

/** Waits before the next poll: a second, or what Retry-After asks (429, 503), up to a minute. */
function retryDelay(response) {
  if (!response || (response.status !== 429 && response.status !== 503)) return POLL_MS;
  const header = response.headers.get('retry-after');
  const seconds = header === null ? NaN : Number(header);
  const ms = Number.isFinite(seconds) ? seconds * 1000 : header ? Date.parse(header) - Date.now() : NaN;
  return Number.isFinite(ms) ? Math.min(MAX_RETRY_MS, Math.max(POLL_MS, ms)) : POLL_MS;
}

/** Keeps the figures on the page and says since when they are the last known ones. */
function markStale(reason, delayMs) {
  document.body.dataset.stale = 'true';
  const notice = $('stale');
  notice.hidden = false;
  if (lastShownAt === undefined) {
    notice.dataset.since = '';
    notice.textContent = `No figures yet: ${reason}. Retrying in ${formatMs(delayMs)}.`;
  } else {
    notice.dataset.since = String(lastShownAt);
    notice.textContent =
      `Stale: these are the figures of ${new Date(lastShownAt).toLocaleTimeString()} (${formatMs(Date.now() - lastShownAt)} ago). ` +
      `${reason}. Retrying in ${formatMs(delayMs)}.`;
  }
  setConnection(
    'stale',
    lastShownAt === undefined ? 'not updating' : `stale since ${new Date(lastShownAt).toLocaleTimeString()}`,
  );
}

function markLive() {
  delete document.body.dataset.stale;
  $('stale').hidden = true;
  setConnection('live', 'live');
}

async function poll() {
  let delay = POLL_MS;
  try {
    if (document.visibilityState !== 'hidden') {
      let response;
      try {
        response = await fetch(haveHistory ? 'dashboard/status.json' : 'dashboard/status.json?history=1', {
          cache: 'no-store',
          headers: { accept: 'application/json' },
        });
      } catch {
        throw new Error('the service does not answer');
      }
      delay = retryDelay(response);
      const body = await response.json().catch(() => undefined);
      if (!response.ok)
        throw new Error(
          body && typeof body.message === 'string' ? body.message.replace(/\.$/, '') : `HTTP ${response.status}`,
        );
      render(body);
      haveHistory = true;
      lastShownAt = body.at;
      markLive();
    }
  } catch (error) {
    markStale(error instanceof Error ? error.message : String(error), delay);
  } finally {
    setTimeout(poll, delay);
  }
}

poll();
