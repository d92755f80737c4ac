// The npm registry reachable from our build machines lacks some platform builds of
// optional native addons (msgpackr-extract for darwin/win32/linux-arm). `npm install`
// skips them silently, but leaves them listed, and `npm ci` then refuses the lock as
// out of sync. This drops optional dependencies that have no entry in the lock; those
// addons are optional speed-ups with pure-JS fallbacks. Run after `npm install`.
import { readFileSync, writeFileSync } from 'node:fs';

const path = new URL('../package-lock.json', import.meta.url);
const lock = JSON.parse(readFileSync(path, 'utf8'));
let pruned = 0;
for (const entry of Object.values(lock.packages)) {
  for (const name of Object.keys(entry.optionalDependencies ?? {})) {
    if (!lock.packages[`node_modules/${name}`]) {
      delete entry.optionalDependencies[name];
      pruned++;
    }
  }
}
writeFileSync(path, JSON.stringify(lock, null, 2) + '\n');
console.log(`pruned ${pruned} optional dependencies missing from the lock`);
