import type { LoggerOptions } from 'pino';

/**
 * The one redaction every log line and every error message of the app passes through. A Redis
 * password can reach a log in three ways: in a URL (`redis://user:password@host`), as an argument of
 * the command ioredis attaches to a ReplyError (AUTH sends it on every reconnect, so a disabled ACL
 * user turns each reconnect into an error carrying it), or verbatim in some message. All three are
 * shown as `***`.
 */

export const HIDDEN = '***';

/** A literal secret shorter than this is not searched for in text: it would garble every line. */
const MIN_LITERAL_SECRET = 4;

/**
 * The URL with its password (and a user-only userinfo, which some clients read as a password)
 * replaced by `***`. Works on strings that do not parse as URLs too, erring on the side of hiding more.
 */
export function redactUrl(url: string): string {
  const schemeEnd = url.indexOf('://');
  const authorityStart = schemeEnd === -1 ? 0 : schemeEnd + 3;
  const at = url.lastIndexOf('@');
  if (at < authorityStart) return url;
  const userinfo = url.slice(authorityStart, at);
  const colon = userinfo.indexOf(':');
  const shown = colon === -1 ? HIDDEN : `${userinfo.slice(0, colon)}:${HIDDEN}`;
  return `${url.slice(0, authorityStart)}${shown}${url.slice(at)}`;
}

/** A URL with a scheme, up to whitespace, a quote or an angle bracket: what may carry a userinfo. */
const URL_IN_TEXT = /\b[a-z][a-z0-9+.-]*:\/\/[^\s"'<>`]+/gi;

/**
 * A URL found in text: a Redis URL as `redactUrl` does it (a password may hold an unencoded `/` or
 * `@`); any other scheme only when its authority (up to the first `/`) has a userinfo, so a
 * `file:///…/@scope+pkg@1.0/…` in a stack trace stays readable.
 */
function redactUrlInText(url: string): string {
  // A Redis Cluster's seed list (`redis://u:pw@a:7000,redis://u:pw@b:7001`) is one match: each URL
  // on its own, so only the passwords go, not the nodes between them.
  if (/^rediss?:/i.test(url))
    return url
      .split(/,(?=rediss?:\/\/)/i)
      .map(redactUrl)
      .join(',');
  const start = url.indexOf('://') + 3;
  const end = url.slice(start).search(/[/?#]/);
  const authorityEnd = end === -1 ? url.length : start + end;
  return url.slice(start, authorityEnd).includes('@')
    ? redactUrl(url.slice(0, authorityEnd)) + url.slice(authorityEnd)
    : url;
}

/** The password of a `redis://` URL, decoded and as written, for literal redaction. */
export function urlSecrets(url: string | undefined): string[] {
  if (!url) return [];
  const userinfo = /^[a-z][a-z0-9+.-]*:\/\/([^/?#]*)@/i.exec(url)?.[1];
  if (!userinfo) return [];
  const colon = userinfo.indexOf(':');
  const raw = colon === -1 ? userinfo : userinfo.slice(colon + 1);
  let decoded = raw;
  try {
    decoded = decodeURIComponent(raw);
  } catch {
    // A malformed escape: the raw form is what could be echoed.
  }
  return [...new Set([raw, decoded, encodeURIComponent(decoded)])].filter((s) => s.length > 0);
}

/** The commands whose arguments are credentials, and which of their arguments to keep. */
function redactArgs(name: string, args: readonly unknown[]): unknown[] {
  const word = (i: number) => {
    const arg: unknown = args[i] ?? ''; // a command argument: a string, a Buffer or a number
    return String(arg).toLowerCase();
  };
  switch (name.toLowerCase()) {
    case 'auth':
    case 'migrate':
      return args.map(() => HIDDEN);
    case 'hello':
      // HELLO protover [AUTH user pass] [SETNAME name]: the version may stay, nothing after it.
      return args.map((a, i) => (i === 0 && /^\d+$/.test(String(a)) ? a : HIDDEN));
    case 'acl':
      return word(0) === 'setuser' ? args.map((a, i) => (i === 0 ? a : HIDDEN)) : [...args];
    case 'config':
      // CONFIG SET name value [name value …]: any setting's value may be a password (requirepass, masterauth, …).
      return word(0) === 'set' ? args.map((a, i) => (i % 2 === 1 || i === 0 ? a : HIDDEN)) : [...args];
    default:
      return [...args];
  }
}

function isPlainObject(value: object): value is Record<string, unknown> {
  const proto = Object.getPrototypeOf(value) as unknown;
  return proto === Object.prototype || proto === null;
}

/** The redaction of one process: URLs everywhere, command arguments, and its configured secrets. */
export interface Redactor {
  /** Any text: URL passwords and the configured secrets replaced by `***`. */
  text(text: string): string;
  /** Any value to be logged or shown: strings as `text`, errors as plain objects without secrets, plain objects and arrays walked. */
  value(value: unknown): unknown;
  /** An error's message, redacted, for an answer or a CLI line. */
  message(error: unknown): string;
  /** A copy of the error to pass on: its name, code and redacted message, no command, no other fields. */
  error(error: unknown): Error;
}

export function createRedactor(secrets: readonly string[] = []): Redactor {
  const literals = [...new Set(secrets)]
    .filter((s) => s.length >= MIN_LITERAL_SECRET)
    .sort((a, b) => b.length - a.length);
  const hideLiterals = (input: string): string => {
    let out = input;
    for (const secret of literals) if (out.includes(secret)) out = out.split(secret).join(HIDDEN);
    return out;
  };
  // The configured secrets go first too: a password holding `,redis://` must not be cut in two by
  // the split of a seed list, and then missed.
  const text = (input: string): string => hideLiterals(hideLiterals(input).replace(URL_IN_TEXT, redactUrlInText));

  const walk = (value: unknown, seen: WeakSet<object>, depth: number): unknown => {
    if (typeof value === 'string') return text(value);
    if (typeof value !== 'object' || value === null) return value;
    if (seen.has(value) || depth > 8) return '[…]';
    seen.add(value);
    if (Array.isArray(value)) return value.map((v) => walk(v, seen, depth + 1));
    if (value instanceof Error) return errorObject(value, seen, depth);
    // Class instances (a request, a socket) are left to their own serializers.
    if (!isPlainObject(value)) return value;
    if (typeof value['name'] === 'string' && Array.isArray(value['args'])) {
      // An ioredis command as it travels on a ReplyError: { name, args }.
      return {
        ...walkEntries(value, seen, depth),
        args: walk(redactArgs(value['name'], value['args'] as unknown[]), seen, depth + 1),
      };
    }
    return walkEntries(value, seen, depth);
  };
  const walkEntries = (value: Record<string, unknown>, seen: WeakSet<object>, depth: number) =>
    Object.fromEntries(Object.entries(value).map(([k, v]) => [k, walk(v, seen, depth + 1)]));
  const errorObject = (error: Error, seen: WeakSet<object>, depth: number): Record<string, unknown> => {
    // Own enumerable properties (ioredis' `command`, `code`, …) plus what Error keeps non-enumerable.
    const fields: Record<string, unknown> = { type: error.name, message: error.message, stack: error.stack };
    for (const [key, v] of Object.entries(error)) fields[key] = v;
    if (error.cause !== undefined) fields['cause'] = error.cause;
    return walkEntries(fields, seen, depth);
  };

  return {
    text,
    value: (value) => walk(value, new WeakSet(), 0),
    message: (error) => text(error instanceof Error ? error.message : String(error)),
    error: (error) => {
      const copy = new Error(text(error instanceof Error ? error.message : String(error)));
      if (error instanceof Error) {
        copy.name = error.name;
        if (error.stack) copy.stack = text(error.stack);
        const code = (error as { code?: unknown }).code;
        if (typeof code === 'string') Object.assign(copy, { code });
      }
      return copy;
    },
  };
}

/**
 * pino options that pass everything through `redactor`: error objects under any key (serializers and
 * the log formatter), string arguments (the message), and the finished line itself (a URL or a
 * secret that came in some other way). Child loggers (Fastify's per request, the processor's) inherit them.
 */
export function redactingLoggerOptions(
  redactor: Redactor,
): Pick<LoggerOptions, 'serializers' | 'formatters' | 'hooks'> {
  const serialize = (value: unknown) => redactor.value(value);
  return {
    serializers: { err: serialize, error: serialize },
    formatters: { log: (object) => redactor.value(object) as Record<string, unknown> },
    hooks: {
      logMethod(args, method) {
        method.apply(
          this,
          args.map((a) => (typeof a === 'string' ? redactor.text(a) : a)) as Parameters<typeof method>,
        );
      },
      streamWrite: (line) => redactor.text(line),
    },
  };
}
