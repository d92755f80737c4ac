import { Migration } from '@mikro-orm/migrations';
import { isPostgres } from './dialect.js';

/**
 * `api_token.expires_at`: when a token stops authenticating (null: never; existing tokens
 * keep working as before). API tokens are access control, not business data, so
 * snapshots neither carry nor restore them and no snapshot upgrade step is needed. The
 * SQL is what the ORM's schema generator produces for the entity on each dialect, so the
 * "schema diff is empty" check keeps holding.
 */
export class Migration20261125100000_token_expiry extends Migration {
  override name = 'Migration20261125100000_token_expiry';

  override up(): void {
    this.addSql(isPostgres(this.driver) ? POSTGRESQL : SQLITE);
  }

  override down(): void {
    this.addSql(isPostgres(this.driver) ? 'alter table "api_token" drop column "expires_at";' : 'alter table `api_token` drop column `expires_at`;');
  }
}

const SQLITE = 'alter table `api_token` add column `expires_at` datetime null;';

const POSTGRESQL = 'alter table "api_token" add "expires_at" timestamptz(3) null;';
