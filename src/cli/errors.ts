/**
 * What can go wrong in a CLI command, each with its exit code, so that a script can tell
 * "the job or the request was refused" from "meshq could not be asked":
 *
 *   0  done
 *   1  the job failed, or the API refused the request (4xx)
 *   2  usage: unknown command or option, bad argument, bad MESHQ_* variable
 *   3  meshq unreachable, or it answered 5xx (try again later)
 */
export const EXIT = { ok: 0, failed: 1, usage: 2, unavailable: 3 } as const;

export abstract class CliError extends Error {
  abstract readonly exitCode: number;
}

export class UsageError extends CliError {
  readonly exitCode = EXIT.usage;
}

/** The API answered 4xx or 5xx with meshq's `{error: {code, message}}` body (or without it). */
export class ApiRefusal extends CliError {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
  }
  get exitCode(): number {
    return this.status >= 500 ? EXIT.unavailable : EXIT.failed;
  }
}

export class Unreachable extends CliError {
  readonly exitCode = EXIT.unavailable;
}

/** A job ended in `failed`; `job` is its view as the API showed it. */
export class JobFailed extends CliError {
  readonly exitCode = EXIT.failed;
  constructor(readonly job: { id: string; type: string; error: { code: string; message: string } | null }) {
    super(`job ${job.id} (${job.type}) failed: ${job.error ? `${job.error.code}: ${job.error.message}` : 'no reason given'}`);
  }
}

/** A job that did not finish within --timeout: the job may still succeed, but the command got no answer. */
export class StillRunning extends CliError {
  readonly exitCode = EXIT.failed;
}
