#!/usr/bin/env node
// `meshq`: the command line of the HTTP API (src/cli/main.ts). Installed as the package's
// `meshq` bin. The version check runs before anything else is loaded (see node-guard.ts).
import { exitOnUnsupportedNode } from './node-guard.js';

exitOnUnsupportedNode();
const { runCli } = await import('../cli/main.js');

process.exitCode = await runCli(process.argv.slice(2));
