/**
 * Every PostgreSQL connection the unit of work writes or reads business data on is set to
 * UTF8 and checked: literals written into closing writes (src/db/closing-write.ts), COPY
 * text (src/db/pg-copy.ts) and JSON all assume it. node-postgres asks for UTF8 when it
 * connects, but a session can be switched afterwards (a pooler handing over a server
 * connection, a stray SET) and text would then be garbled silently. Set per session, once
 * per connection: when the ORM's Kysely first uses it (src/db/orm.ts) and when a write
 * transaction first holds it (src/db/pg-client.ts); not as a startup option, which
 * connection poolers such as PgBouncer refuse. set_config answers with the value now in force.
 */
export const UTF8_SESSION = "select set_config('client_encoding', 'UTF8', false) as client_encoding";

/** Throws unless `shown` (the rows of UTF8_SESSION) says UTF8. */
export function assertUtf8(shown: readonly Record<string, unknown>[]): void {
  const encoding = shown[0]?.client_encoding;
  if (typeof encoding !== 'string' || encoding.toUpperCase() !== 'UTF8') {
    throw new Error(`PostgreSQL connection has client_encoding ${String(encoding)} after setting UTF8; meshq needs UTF8`);
  }
}
