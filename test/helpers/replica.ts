import { type ChildProcess, spawn } from 'node:child_process';
import { resolve } from 'node:path';
import { SignJWT } from 'jose';
import { tempDir } from './databases.js';

export interface ReplicaProcess {
  child: ChildProcess;
  /** Its GraphQL URL. */
  url: string;
}

/**
 * `flotilla serve` as a real process on the given database (another replica of the cluster), with
 * only the FLOTILLA_ settings given here (none of the shell's); resolves once it serves.
 */
export function startReplicaProcess(
  databaseUrl: string,
  options: { env?: Record<string, string>; nodeFlags?: string[] } = {},
): Promise<ReplicaProcess> {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('FLOTILLA_')) env[k] = v;
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [...(options.nodeFlags ?? []), resolve('bin/flotilla.js'), 'serve'], {
      env: {
        ...env,
        FLOTILLA_DATABASE_URL: databaseUrl,
        FLOTILLA_PORT: '0',
        FLOTILLA_DATA_DIR: tempDir(),
        FLOTILLA_LOG_LEVEL: 'warn',
        ...options.env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    const onData = (d: Buffer) => {
      out += d.toString();
      const match = /serving GraphiQL at (http:\/\/\S+)/.exec(out);
      if (match) resolvePromise({ child, url: match[1] });
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.on('exit', (code) => reject(new Error(`replica exited with ${code}: ${out}`)));
  });
}

/** An HS256 issuer for a server's FLOTILLA_HS256_ISSUERS, standing for an organisation's sign-in. */
export interface Hs256Issuer {
  issuer: string;
  audience: string;
  secret: string;
}

/** A person's token from that issuer (subject `sub`, valid for an hour). */
export function personToken(issuer: Hs256Issuer, sub: string): Promise<string> {
  return new SignJWT({})
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuer(issuer.issuer)
    .setAudience(issuer.audience)
    .setSubject(sub)
    .setIssuedAt()
    .setExpirationTime('1h')
    .sign(new TextEncoder().encode(issuer.secret));
}
