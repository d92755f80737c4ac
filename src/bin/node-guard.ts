/**
 * The Node.js version check every entry point runs before it loads anything else.
 *
 * On an older Node, better-sqlite3's prebuilt binary (built for Node 24's ABI) crashes
 * the process without a word, and npm only warns. So each entry in src/bin imports this
 * module first, calls exitOnUnsupportedNode(), and only then loads the rest of meshq with
 * import(): static imports would all be linked, and native modules loaded, before any
 * line of the entry runs. This module imports nothing and uses no syntax newer Node
 * versions introduced, so it runs on the old Node it is meant to stop.
 */

/** The Node.js major version meshq is built and tested for (.nvmrc, package.json engines). */
export const NEEDED_NODE_MAJOR = 24;

/**
 * The one-line message for a Node.js version meshq cannot run on, or undefined when the
 * version is supported. `version` is like process.versions.node ("20.20.2") or "v20.20.2".
 */
export function unsupportedNodeMessage(version: string): string | undefined {
  const major = Number(/^v?(\d+)(?:\.|$)/.exec(version.trim())?.[1]);
  if (Number.isInteger(major) && major >= NEEDED_NODE_MAJOR) return undefined;
  const found = version.trim().replace(/^v/, '') || 'unknown';
  return (
    `meshq: found Node.js ${found}, needs Node.js ${NEEDED_NODE_MAJOR} or newer: ` +
    `run \`nvm install\` in the meshq folder (it reads .nvmrc), or see "Run it" in README.md`
  );
}

/** Writes the message and exits 1 at once when this Node.js is too old. */
export function exitOnUnsupportedNode(version: string = process.versions.node): void {
  const message = unsupportedNodeMessage(version);
  if (message === undefined) return;
  process.stderr.write(message + '\n');
  process.exit(1);
}
