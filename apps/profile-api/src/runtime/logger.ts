import { pino, type Logger, type LevelWithSilent } from 'pino';
import PinoPretty from 'pino-pretty';
import { redactingLoggerOptions, type Redactor } from './redact.ts';

export interface LoggerSettings {
  readonly level: LevelWithSilent;
  /** Everything logged passes through it (URLs' passwords, command arguments). */
  readonly redactor: Redactor;
  /** File descriptor the lines go to: stderr by default, so stdout stays the commands' output. */
  readonly fd?: 1 | 2;
  /** Human-readable lines; by default when the destination is a terminal and CI is not set. */
  readonly pretty?: boolean;
}

/** Whether a person reads the output: a terminal, not CI. */
export function isInteractive(fd: 1 | 2, env: NodeJS.ProcessEnv = process.env): boolean {
  const stream = fd === 1 ? process.stdout : process.stderr;
  const ci = env['CI'];
  return stream.isTTY === true && (ci === undefined || ci === '' || ci === 'false' || ci === '0');
}

/** The process logger: pino-pretty on a terminal, JSON lines otherwise (a file, a pipe, a log collector, CI). */
export function createLogger(settings: LoggerSettings): Logger {
  const fd = settings.fd ?? 2;
  const options = { level: settings.level, ...redactingLoggerOptions(settings.redactor) };
  if (!(settings.pretty ?? isInteractive(fd))) return pino(options, pino.destination({ fd, sync: true }));
  // Synchronous, so the last lines before an exit are not lost.
  return pino(
    options,
    PinoPretty({
      destination: fd,
      sync: true,
      colorize: true,
      translateTime: 'SYS:HH:MM:ss.l',
      ignore: 'pid,hostname',
    }),
  );
}
