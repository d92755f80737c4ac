/**
 * Progress for long jobs (export, restore, mesh.generate) and downloads: a bar on
 * stderr when stderr is a terminal, nothing otherwise (scripts, pipes, CI logs, and
 * `--json`, whose stdout must hold machine output only).
 */
import { SingleBar, Presets } from 'cli-progress';

export interface Progress {
  /** 0-100. */
  update(percent: number): void;
  stop(): void;
}

const SILENT: Progress = { update() {}, stop() {} };

export function progressBar(label: string, enabled: boolean, stream: NodeJS.WriteStream = process.stderr): Progress {
  if (!enabled || !stream.isTTY) return SILENT;
  const bar = new SingleBar(
    { format: `${label} [{bar}] {percentage}% | {duration_formatted}`, stream, hideCursor: true, clearOnComplete: false },
    Presets.shades_classic,
  );
  bar.start(100, 0);
  let stopped = false;
  return {
    update(percent) {
      if (!stopped) bar.update(Math.max(0, Math.min(100, Math.round(percent))));
    },
    stop() {
      if (stopped) return;
      stopped = true;
      bar.stop();
    },
  };
}

/** A job's `progress` as a percentage: BullMQ stores whatever the processor reported. */
export function percentOf(progress: unknown): number | undefined {
  if (typeof progress === 'number' && Number.isFinite(progress)) return progress;
  if (progress && typeof progress === 'object' && typeof (progress as { percent?: unknown }).percent === 'number') {
    return (progress as { percent: number }).percent;
  }
  return undefined;
}
