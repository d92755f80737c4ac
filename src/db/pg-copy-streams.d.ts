// The part of pg-copy-streams (which ships no types) that src/db/pg-copy.ts uses.
declare module 'pg-copy-streams' {
  import type { Readable, Writable } from 'node:stream';
  import type { Submittable } from 'pg';

  export interface CopyToStreamQuery extends Readable, Submittable {
    rowCount: number;
  }
  export interface CopyFromStreamQuery extends Writable, Submittable {
    rowCount: number;
  }
  export function to(text: string): CopyToStreamQuery;
  export function from(text: string): CopyFromStreamQuery;
}
