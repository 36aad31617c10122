import pino, { type Logger } from 'pino';

export type { Logger };

/** JSON logs on stdout; each request's lines carry its `reqId`. */
export function createLogger(level: string): Logger {
  return pino({ level, base: { service: 'flotilla' }, timestamp: pino.stdTimeFunctions.isoTime });
}
