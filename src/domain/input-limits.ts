/** Limits on what callers may send, documented once. Services validate against these. */

/** Labels of a worker, a sandbox or a placement: at most this many keys. */
export const MAX_LABELS = 64;
export const LABEL_KEY_MAX_LENGTH = 100;
export const LABEL_VALUE_MAX_LENGTH = 200;
/** An allowed-image glob of a tenant policy. */
export const IMAGE_PATTERN_MAX_LENGTH = 500;
/** The version string a worker reports in a heartbeat; longer ones are cut. */
export const WORKER_VERSION_MAX_LENGTH = 100;
