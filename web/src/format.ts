/** How long ago, in words a person reads at a glance. */
export function ago(iso: string | null | undefined, now: number = Date.now()): string {
  if (!iso) return 'never';
  const seconds = Math.max(0, Math.round((now - new Date(iso).getTime()) / 1000));
  if (seconds < 5) return 'just now';
  if (seconds < 60) return `${seconds}s ago`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `${minutes} min ago`;
  const hours = Math.round(minutes / 60);
  if (hours < 48) return `${hours} h ago`;
  return `${Math.round(hours / 24)} days ago`;
}

export function cpu(millis: number): string {
  return millis % 1000 === 0 ? `${millis / 1000} CPU` : `${(millis / 1000).toFixed(2)} CPU`;
}

export function memory(mb: number): string {
  return mb >= 1024 ? `${(mb / 1024).toFixed(mb % 1024 === 0 ? 0 : 1)} GiB` : `${mb} MiB`;
}

export interface TypedError {
  __typename?: string;
  code?: string;
  message?: string;
  resource?: string;
  limit?: number;
  requested?: number;
  rule?: string;
  field?: string | null;
}

const RESOURCE_WORDS: Record<string, string> = {
  sandboxes: 'sandboxes',
  cpuMillis: 'CPU (millicores)',
  memoryMb: 'memory (MiB)',
};

/** The contract's typed errors, said the way a person understands them. */
export function explainError(error: TypedError): string {
  switch (error.code) {
    case 'QUOTA_EXCEEDED':
      return `That would go over this tenant's quota for ${RESOURCE_WORDS[error.resource ?? ''] ?? error.resource}: the limit is ${error.limit}, and this sandbox would bring it to ${error.requested}. Stop or delete a sandbox, or ask an admin to raise the quota.`;
    case 'POLICY_VIOLATION':
      return error.rule === 'allowedImages'
        ? `This tenant's policy does not allow that image. ${error.message ?? ''}`
        : `That breaks this tenant's policy (${error.rule}): ${error.message ?? ''}`;
    case 'NO_CAPACITY':
      return 'No worker has room for this sandbox right now.';
    case 'VALIDATION_FAILED':
      return `Please check ${error.field ? `“${error.field.replace(/^input\./, '')}”` : 'the form'}: ${error.message ?? 'it is not valid'}.`;
    case 'FORBIDDEN':
      return 'Your token is not allowed to do that in this tenant.';
    case 'NOT_FOUND':
      return 'That no longer exists (or you cannot see it).';
    case 'QUESTION_CLOSED':
      return 'That question was answered already, or it was cancelled.';
    case 'INVALID_TRANSITION':
      return `Not possible in the sandbox's current state: ${error.message ?? ''}`;
    case 'UNAUTHENTICATED':
      return 'Your token was not accepted. Sign in again with a valid token.';
    default:
      return error.message ?? 'Something went wrong.';
  }
}
