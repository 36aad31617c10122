import { DomainError, type ErrorCode } from '../kernel/errors.js';

/** Why a backup, restore or store move was refused or failed; the CLI prints the message. */
export type StoreOperationFailure =
  /** The target holds data and `--force` was not given. */
  | 'NOT_EMPTY'
  /** The file is damaged, truncated or not a Flotilla backup. */
  | 'CORRUPT'
  /** The file's (or source's) applied migrations differ from this version's. */
  | 'SCHEMA_MISMATCH'
  /** The arguments name something this command cannot work on (e.g. an in-memory database). */
  | 'UNSUPPORTED'
  /** Another process has the SQLite file open (a running server). */
  | 'IN_USE'
  /** The copy's counts or checksums differ from the source's. */
  | 'VERIFY_FAILED'
  /** Writing failed part-way (e.g. a row broke a constraint); the transaction was rolled back. */
  | 'ROLLED_BACK';

const CODES: Record<StoreOperationFailure, ErrorCode> = {
  NOT_EMPTY: 'ALREADY_EXISTS',
  CORRUPT: 'VALIDATION_FAILED',
  SCHEMA_MISMATCH: 'VALIDATION_FAILED',
  UNSUPPORTED: 'VALIDATION_FAILED',
  IN_USE: 'UNAVAILABLE',
  VERIFY_FAILED: 'VALIDATION_FAILED',
  ROLLED_BACK: 'VALIDATION_FAILED',
};

export class StoreOperationError extends DomainError {
  readonly code: ErrorCode;
  constructor(
    readonly failure: StoreOperationFailure,
    message: string,
  ) {
    super(message);
    this.code = CODES[failure];
  }
}
