import { createRequire } from 'node:module';
import { pino, type DestinationStream, type Logger } from 'pino';
import { ConfigError } from './config.js';

/**
 * Secrets never reach the logs: every field that could carry one is censored by path,
 * wherever it appears in a logged object.
 */
export const REDACTED_PATHS = [
  'password',
  '*.password',
  'token',
  '*.token',
  'privateKey',
  '*.privateKey',
  'secret',
  '*.secret',
  'secretKey',
  '*.secretKey',
  'authorization',
  '*.authorization',
  'req.headers.authorization',
  'headers.authorization',
];

export type LogFormat = 'json' | 'pretty';

/**
 * `json` (default): one object a line, for log collectors. `pretty`: readable lines for a
 * person at a terminal, formatted by pino-pretty in pino's transport thread (off the event
 * loop). pino-pretty is a development dependency: a production image has no need of it,
 * so asking for it there is a clear start-up error rather than a crash inside pino.
 */
export function createLogger(level: string, name = 'meshq', destination?: DestinationStream, format: LogFormat = 'json'): Logger {
  const options = { name, level, redact: { paths: REDACTED_PATHS, censor: '[redacted]' } };
  if (destination) return pino(options, destination);
  if (format === 'pretty') {
    try {
      createRequire(import.meta.url).resolve('pino-pretty');
    } catch {
      throw new ConfigError(['LOG_FORMAT: pretty needs the pino-pretty package, a development dependency (npm install without --omit=dev); use json in production']);
    }
    return pino({ ...options, transport: { target: 'pino-pretty', options: { colorize: process.stdout.isTTY, translateTime: 'SYS:HH:MM:ss.l' } } });
  }
  return pino(options);
}

export type { Logger };
