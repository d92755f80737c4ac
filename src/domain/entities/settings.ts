import { defineEntity, p } from '@mikro-orm/core';

export const SettingSchema = defineEntity({
  name: 'Setting',
  tableName: 'setting',
  properties: {
    key: p.string().length(128).primary(),
    value: p.json<unknown>(),
    updatedAt: p.datetime().length(3).onCreate(() => new Date()).onUpdate(() => new Date()),
  },
});
export class Setting extends SettingSchema.class {}
SettingSchema.setClass(Setting);
