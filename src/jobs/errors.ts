/**
 * Error classification, in one place: domain errors (and constraint violations, which
 * are domain conflicts that raced past a repository's check) fail a job permanently with
 * a code; everything else is infrastructure and is retried with backoff.
 *
 * BullMQ keeps only a message for a failed job, so the code travels inside it as a
 * `[CODE] message` prefix and is parsed back for the API.
 */
import {
  ForeignKeyConstraintViolationException,
  NotNullConstraintViolationException,
  UniqueConstraintViolationException,
} from '@mikro-orm/core';
import { UnrecoverableError } from 'bullmq';
import { DomainError, type DomainErrorCode } from '../domain/errors.js';

export function toDomainError(err: unknown): DomainError | undefined {
  if (err instanceof DomainError) return err;
  if (err instanceof UniqueConstraintViolationException) {
    return new DomainError('CONFLICT', 'a conflicting record already exists (it was created concurrently)');
  }
  if (err instanceof ForeignKeyConstraintViolationException) {
    return new DomainError('NOT_FOUND', 'a record this job refers to no longer exists');
  }
  if (err instanceof NotNullConstraintViolationException) {
    return new DomainError('INVALID', 'a required value is missing');
  }
  return undefined;
}

/** Turns a domain error into BullMQ's "do not retry" error carrying the code. */
export function permanentFailure(err: DomainError): UnrecoverableError {
  return new UnrecoverableError(`[${err.code}] ${err.message}`);
}

export interface JobError {
  code: string;
  message: string;
}

const CODED = /^\[([A-Z_]+)\] ([\s\S]*)$/;

export function parseFailedReason(reason: string | undefined): JobError | null {
  if (!reason) return null;
  const m = CODED.exec(reason);
  if (m) return { code: m[1] as DomainErrorCode, message: m[2]! };
  return { code: 'INTERNAL', message: reason };
}
