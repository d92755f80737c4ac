/**
 * The HTTP load generator in a process of its own, so autocannon does not share the
 * API's event loop (in-process it would halve what the API can do on its own).
 * Receives {url, authorization, ids, connections, durationS}; answers {ok, non2xx}.
 */
import autocannon from 'autocannon';

process.once('message', async (m) => {
  const { url, authorization, ids, connections, durationS } = m as {
    url: string;
    authorization: string;
    ids: string[];
    connections: number;
    durationS: number;
  };
  let i = 0;
  const result = await autocannon({
    url,
    method: 'POST',
    connections,
    duration: durationS,
    headers: { 'content-type': 'application/json', authorization },
    requests: [
      {
        setupRequest: (req) => ({ ...req, body: JSON.stringify({ type: 'node.update', data: { id: ids[i++ % ids.length], listenPort: 2000 } }) }),
      },
    ],
  });
  process.send!({ ok: result['2xx'], non2xx: result.non2xx }, () => process.exit(0));
});
