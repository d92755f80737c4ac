import { defineEntity, p } from '@mikro-orm/core';

export const AuditRecordSchema = defineEntity({
  name: 'AuditRecord',
  tableName: 'audit_record',
  properties: {
    id: p.uuid().primary(),
    at: p.datetime().length(3).index(),
    actor: p.string().length(128),
    action: p.string().length(64),
    entityType: p.string().length(64),
    entityId: p.string().length(64).nullable(),
    detail: p.json<Record<string, unknown>>(),
  },
});
export class AuditRecord extends AuditRecordSchema.class {}
AuditRecordSchema.setClass(AuditRecord);
