import type { z } from 'zod';

/** "configId: expected a UUID; name: too long (max 64)" — what was wrong, and where. */
export function describeZodError(error: z.ZodError, what: string): string {
  const parts = error.issues.map((i) => {
    const path = i.path.length > 0 ? i.path.join('.') : '(payload)';
    return `${path}: ${i.message}`;
  });
  return `invalid ${what} payload: ${parts.join('; ')}`;
}
