import { defineEntity, p } from '@mikro-orm/core';

export const ApiTokenSchema = defineEntity({
  name: 'ApiToken',
  tableName: 'api_token',
  properties: {
    id: p.uuid().primary(),
    name: p.string().length(64),
    tokenHash: p.string().length(64).unique(),
    scopes: p.json<string[]>(),
    /** Null: never expires. An expired token authenticates no more (401). */
    expiresAt: p.datetime().length(3).nullable(),
    createdAt: p.datetime().length(3).onCreate(() => new Date()),
    lastUsedAt: p.datetime().length(3).nullable(),
  },
});
export class ApiToken extends ApiTokenSchema.class {}
ApiTokenSchema.setClass(ApiToken);

/**
 * Not business data: snapshots neither carry nor replace it, so a restore never locks the
 * administrator out. It also keeps the snapshot export key sealed under the server key
 * (see src/crypto.ts): derived from the password when it is set, so workers can
 * encrypt exports without the password ever passing through Redis.
 */
export const AdminUserSchema = defineEntity({
  name: 'AdminUser',
  tableName: 'admin_user',
  properties: {
    id: p.uuid().primary(),
    name: p.string().length(64).unique(),
    passwordHash: p.string().length(255),
    exportKeySealed: p.text(),
    exportKdf: p.json<{ salt: string; N: number; r: number; p: number }>(),
    updatedAt: p.datetime().length(3).onCreate(() => new Date()).onUpdate(() => new Date()),
  },
});
export class AdminUser extends AdminUserSchema.class {}
AdminUserSchema.setClass(AdminUser);
