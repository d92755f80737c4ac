/**
 * snapshot.export and snapshot.restore. Both run inside the runner's transaction like
 * every job; restore's takes the data lock exclusively (its row in src/jobs/table.ts), so no
 * operation writes while it runs and operations submitted meanwhile run after it, against
 * the restored data. Staging an upload for restore is here too: it is the write that
 * hands a checked file over to the restore job (src/snapshots checks files but never
 * touches the database).
 */
import type { UnitOfWork } from '../../db/unit-of-work.js';
import { ADMIN_NAME } from '../../repositories/admin-account.js';
import { createRepositories } from '../../repositories/index.js';
import type { ArchiveBytes, SnapshotView } from '../../repositories/snapshot-archives.js';
import { DomainError } from '../../domain/errors.js';
import { MIGRATIONS } from '../../migrations/index.js';
import { parseServerKey } from '../../crypto.js';
import { exportEnvelope, exportSchemaVersion, unsealExportKey } from '../../snapshots/export.js';
import { restoreStaged } from '../../snapshots/restore.js';
import { SnapshotWriter } from '../../snapshots/writer.js';
import type { JobContext } from '../context.js';
import type { SnapshotExport, SnapshotRestore } from '../payloads.js';

export interface ExportResult {
  snapshotId: string;
  size: number;
  sha256: string;
}

export async function exportSnapshot(_data: SnapshotExport, ctx: JobContext): Promise<ExportResult> {
  const admin = await ctx.repos.admin.findByName(ADMIN_NAME);
  if (!admin) {
    throw new DomainError(
      'CONFLICT',
      'no administrator yet: snapshots are encrypted with a key derived from the administrator password; ' +
        'set ADMIN_PASSWORD or run `npm run admin -- set-password` first',
    );
  }
  const { key, kdf } = unsealExportKey(admin, parseServerKey(ctx.config.secretKey));
  try {
    const schemaVersion = exportSchemaVersion(await ctx.repos.snapshots.appliedMigrations(), MIGRATIONS.map((m) => m.name));
    const createdAt = new Date();
    // The rows' JSON is written from the database's output and the writer compresses it as
    // it comes into a temporary file: the rows never become JS objects
    // (SnapshotRepository.writeBusinessTablesJson). The file is then encrypted as it is
    // stored, a piece at a time: neither the body nor the file is ever held whole.
    const writer = new SnapshotWriter(exportEnvelope(schemaVersion, createdAt), key, kdf);
    let stored: SnapshotView;
    try {
      await ctx.repos.snapshots.writeBusinessTablesJson(writer);
      const file = await writer.finish();
      stored = await ctx.repos.snapshots.storeArchive({ kind: 'export', data: file.bytes, schemaVersion, counts: writer.counts, createdAt });
    } finally {
      await writer.discard();
    }
    const pruned = await ctx.repos.snapshots.pruneExports(ctx.config.snapshotKeep);
    ctx.log.info({ snapshotId: stored.id, size: stored.size, counts: stored.counts, pruned }, 'snapshot exported');
    return { snapshotId: stored.id, size: stored.size, sha256: stored.sha256 };
  } finally {
    key.fill(0);
  }
}

export interface RestoreResult {
  /** Rows restored per table. */
  rows: Record<string, number>;
  /** The data epoch this restore made (the broker sync records the epoch it applied). */
  epoch: number;
  /** When the restore held the data lock: from the start of its work to just before commit. */
  startedAt: string;
  finishedAt: string;
}

/** What staging needs of a checked upload (src/snapshots/upload-check.ts). */
export interface StageableUpload {
  meta: { schemaVersion: string; counts: Record<string, number> };
  sealedKey: string;
}

/**
 * Keeps a checked upload for the restore job: the encrypted bytes as uploaded (read as
 * they are stored: the API's spool file of the upload), and the file's data key sealed
 * under the server key. The job gets only the staged id.
 */
export async function stageUpload(deps: { uow: UnitOfWork; serverKey: Buffer }, file: ArchiveBytes, checked: StageableUpload): Promise<SnapshotView> {
  return deps.uow.write((em, tx) =>
    createRepositories(em, { serverKey: deps.serverKey, tx }).snapshots.storeArchive({
      kind: 'staged',
      data: file,
      schemaVersion: checked.meta.schemaVersion,
      counts: checked.meta.counts,
      sealedKey: checked.sealedKey,
    }),
  );
}

/** Staged uploads that never got restored are kept this long. */
export const STAGED_TTL_MS = 24 * 3600 * 1000;

export async function restoreSnapshot(data: SnapshotRestore, ctx: JobContext): Promise<RestoreResult> {
  const startedAt = new Date();
  const staged = await ctx.repos.snapshots.getStaged(data.stagedId);
  if (!staged) {
    throw new DomainError(
      'NOT_FOUND',
      `staged upload ${data.stagedId} does not exist (uploads are kept ${STAGED_TTL_MS / 3600_000} hours, and each is restored once); upload the file again`,
      { entity: 'staged snapshot', id: data.stagedId },
    );
  }
  // The staged file streams through the reader (decrypt, inflate, parse, upgrade, and the
  // row checks again unless the API's check provably covers these bytes in this meshq)
  // straight into the database, batch by batch, inside this transaction: no more than a
  // batch of rows is held, and the transaction commits only after the file's
  // authentication tag checked at its end (src/snapshots/reader.ts).
  const serverKey = parseServerKey(ctx.config.secretKey);
  const specs = ctx.repos.snapshots.tableSpecs();
  const specNames = new Set(specs.map((s) => s.table));
  let reported = -1;
  let streamed: Awaited<ReturnType<typeof restoreStaged>> | undefined;
  const rows = await ctx.repos.snapshots.replaceBusinessData(
    async (load) => {
      streamed = await restoreStaged(() => ctx.repos.snapshots.archiveBytes(staged), staged.sealedKey, serverKey, specs, {
        begin: (meta) => load.total(Object.entries(meta.counts).reduce((n, [t, c]) => n + (specNames.has(t) ? c : 0), 0)),
        rows: (spec, batch) => load.rows(spec, batch),
        ...(load.rowsJson ? { rowsJson: load.rowsJson } : {}),
      });
    },
    async (done, total) => {
      // 1..99 while rows go in; 100 only once committed. Whole percents: every update is a
      // Redis round trip.
      const percent = 1 + Math.floor((98 * done) / Math.max(total, 1));
      if (percent !== reported) {
        reported = percent;
        await ctx.progress(percent);
      }
    },
  );
  const { meta, upgradedThrough } = streamed!;
  const epoch = await ctx.repos.system.bumpDataEpoch();
  // EMQX must follow the restored credentials; the runner requests the sync after commit
  // when MQTT is enabled, and the mark keeps it pending (for the scheduled reconcile) if not.
  await ctx.repos.system.markBrokerSyncPending(`snapshot.restore ${ctx.jobId}`);
  await ctx.repos.snapshots.deleteArchive(staged.id);
  await ctx.repos.snapshots.pruneStaged(new Date(Date.now() - STAGED_TTL_MS));
  // Business rows were just replaced, audit log included, so the record of who restored
  // what lives in system state, which restores leave alone.
  await ctx.repos.system.set('last-restore', {
    jobId: ctx.jobId,
    actor: ctx.actor,
    epoch,
    sha256: staged.sha256,
    schemaVersion: meta.schemaVersion,
    exportedAt: meta.createdAt,
    upgradedThrough,
    rows,
    at: new Date().toISOString(),
  });
  ctx.afterCommit(() => ctx.progress(100));
  const finishedAt = new Date();
  ctx.log.info({ stagedId: staged.id, rows, epoch, ms: finishedAt.getTime() - startedAt.getTime() }, 'snapshot restored');
  return { rows, epoch, startedAt: startedAt.toISOString(), finishedAt: finishedAt.toISOString() };
}
