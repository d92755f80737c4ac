/**
 * A login flood in a process of its own, so the flooding clients do not share the API's
 * event loop (in-process, their own CPU would show up as the API's latency). Receives
 * {url, authorization, connections, durationS}; answers {statuses}.
 */
import autocannon from 'autocannon';

process.once('message', async (m) => {
  const { url, authorization, connections, durationS } = m as { url: string; authorization: string; connections: number; durationS: number };
  const statuses: Record<string, number> = {};
  const instance = autocannon({ url, connections, duration: durationS, headers: { authorization } }, () => {
    process.send!({ statuses }, () => process.exit(0));
  });
  instance.on('response', (_client, statusCode) => {
    statuses[statusCode] = (statuses[statusCode] ?? 0) + 1;
  });
});
