import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config/index.js';

describe('event stream configuration', () => {
  it('takes a separate Postgres URL for the LISTEN connection and refuses anything else', () => {
    const base = { FLOTILLA_DATABASE_URL: 'postgres://u:p@pgbouncer:6432/flotilla' };
    expect(loadConfig(base).eventListenUrl).toBeUndefined();
    const config = loadConfig({ ...base, FLOTILLA_EVENT_LISTEN_URL: 'postgres://u:p@db:5432/flotilla' });
    expect(config.eventListenUrl).toMatchObject({ kind: 'postgres', location: 'postgres://u:p@db:5432/flotilla' });
    expect(() => loadConfig({ ...base, FLOTILLA_EVENT_LISTEN_URL: 'sqlite:./x.db' })).toThrow(ConfigError);
    try {
      loadConfig({ ...base, FLOTILLA_EVENT_LISTEN_URL: 'sqlite:./x.db' });
    } catch (err) {
      expect((err as ConfigError).problems).toEqual(['FLOTILLA_EVENT_LISTEN_URL: must be a postgres:// URL']);
    }
  });
});
