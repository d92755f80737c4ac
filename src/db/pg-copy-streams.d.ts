// The part of pg-copy-streams (which ships no types) that src/db/pg-copy.ts uses.
declare module 'pg-copy-streams' {
  import type { Writable } from 'node:stream';
  import type { Submittable } from 'pg';

  export interface CopyFromStreamQuery extends Writable, Submittable {
    rowCount: number;
  }
  export function from(text: string): CopyFromStreamQuery;
}
