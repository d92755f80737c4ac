/**
 * A small reader of wg-quick files: `[Section]` headers (repeatable), `Key = Value` lines,
 * `#` comments. Anything else is an error, so a malformed line fails the test.
 */
export function parseWgIni(text: string): { section: string; values: Record<string, string> }[] {
  const sections: { section: string; values: Record<string, string> }[] = [];
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const header = /^\[([A-Za-z]+)\]$/.exec(line);
    if (header) {
      sections.push({ section: header[1]!, values: {} });
      continue;
    }
    const pair = /^([A-Za-z0-9]+)\s*=\s*(.+)$/.exec(line);
    if (!pair || sections.length === 0) throw new Error(`line ${i + 1} is not INI: ${JSON.stringify(raw)}`);
    const values = sections.at(-1)!.values;
    if (Object.hasOwn(values, pair[1]!)) throw new Error(`line ${i + 1}: ${pair[1]} repeated in its section`);
    values[pair[1]!] = pair[2]!;
  }
  return sections;
}
