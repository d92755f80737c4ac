/**
 * `npm run bench`: every benchmark, one run, one table of figures with ratios against
 * baselines measured in the same run (machines here are noisy; ratios travel, absolute
 * times do not). Never part of `npm test`.
 */
import { benchJobs } from './jobs-bench.js';
import { printTable } from './support.js';

const only = process.argv[2];
if (!only || only === 'jobs') await benchJobs();
printTable();
process.exit(0);
