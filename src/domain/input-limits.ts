/** Limits on what callers may send, documented once. Services validate against these. */

/** Labels of a worker, a sandbox or a placement: at most this many keys. */
export const MAX_LABELS = 64;
export const LABEL_KEY_MAX_LENGTH = 100;
export const LABEL_VALUE_MAX_LENGTH = 200;
/** An allowed-image glob of a tenant policy. */
export const IMAGE_PATTERN_MAX_LENGTH = 500;
/** The version string a worker reports in a heartbeat; longer ones are cut. */
export const WORKER_VERSION_MAX_LENGTH = 100;

/** A region of a worker or of a sandbox's placement. */
export const REGION_MAX_LENGTH = 100;
/** A JSON input (e.g. a heartbeat's `observed`): objects and arrays nested at most this deep… */
export const JSON_INPUT_MAX_DEPTH = 32;
/** …and at most this many characters once serialised. */
export const JSON_INPUT_MAX_LENGTH = 64 * 1024;

/**
 * Lengths of string inputs that have no rule of their own in a service. Every String and ID input
 * of the schema has a limit (resolvers/input-lengths.ts refuses longer values before a resolver
 * runs); these are the ones named nowhere else.
 */
/** A global id (`Type:uuid`, base64url) is about 60 characters. */
export const ID_INPUT_MAX_LENGTH = 200;
/** An opaque page or event cursor. */
export const CURSOR_INPUT_MAX_LENGTH = 200;
/** A lease's fencing token: a decimal number. */
export const FENCING_TOKEN_MAX_LENGTH = 40;
/** The reason given to `restartSandbox` (shown in the sandbox's status reason and events). */
export const RESTART_REASON_MAX_LENGTH = 500;
/** A message's channel (e.g. "chat", "stdout"). */
export const MESSAGE_CHANNEL_MAX_LENGTH = 100;
/** One argument of a sandbox's command. */
export const COMMAND_ARG_MAX_LENGTH = 4096;
/** A tenant's slug ([a-z0-9-]{3,40}; the service checks the pattern). */
export const TENANT_SLUG_MAX_LENGTH = 40;
/** A thread id of a message (the service checks its pattern). */
export const THREAD_ID_MAX_LENGTH = 200;
/** A worker's name (the service checks its pattern). */
export const WORKER_NAME_MAX_LENGTH = 200;
/**
 * Text a service cuts to its own, shorter limit (a status reason, an agent's activity, a
 * worker's version) is accepted up to this length; longer is refused.
 */
export const CUT_TEXT_INPUT_MAX_LENGTH = 64 * 1024;

/** A worker's port range: at most this many ports (e.g. 8000–8999 is 1000). */
export const WORKER_PORT_RANGE_MAX_SIZE = 10_000;
/** A worker's public base URL (http or https, without a port). */
export const PUBLIC_BASE_URL_MAX_LENGTH = 500;
/** Ports a sandbox may ask for unless FLOTILLA_MAX_PORTS_PER_SANDBOX says otherwise. */
export const DEFAULT_MAX_PORTS_PER_SANDBOX = 8;
/** The most FLOTILLA_MAX_PORTS_PER_SANDBOX may allow: ports are named A to Z. */
export const MAX_PORTS_PER_SANDBOX_LIMIT = 26;

/** An agent's question (postAgentQuestion): its prompt, in characters… */
export const QUESTION_PROMPT_MAX_LENGTH = 4_000;
/** …at most this many options to choose from… */
export const QUESTION_MAX_OPTIONS = 20;
/** …each 1 to this many characters. */
export const QUESTION_OPTION_MAX_LENGTH = 200;
/** An environment variable's or secret's name: a POSIX name ([A-Za-z_][A-Za-z0-9_]*) of at most this many characters. */
export const ENV_NAME_MAX_LENGTH = 128;
/** Names the worker agent sets itself (FLOTILLA_SANDBOX_ID, FLOTILLA_PORT_A, …): refused for variables and secrets, in any case. */
export const ENV_RESERVED_PREFIX = 'FLOTILLA_';
/** An environment variable's or secret's value, in bytes of UTF-8. */
export const ENV_VALUE_MAX_BYTES = 32 * 1024;
/** Variables and secrets together, per tenant (its tenant-wide ones) or per sandbox. */
export const MAX_ENV_ENTRIES_PER_SCOPE = 200;
/** Secrets re-encrypted per transaction by `flotilla keys rotate-secrets`. */
export const SECRET_REENCRYPT_BATCH = 100;
