import type { AbstractSqlDriver } from '@mikro-orm/sql';
import { PostgreSqlPlatform } from '@mikro-orm/postgresql';

export const isPostgres = (driver: AbstractSqlDriver): boolean => driver.getPlatform() instanceof PostgreSqlPlatform;
