// The original service's queue layer, alone: BullMQ with one job per order, VIP first.
//
// What the NestJS + BullMQ service did per run, without its database (so that the harness's
// recorded total, which includes a real store, is compared with a lower bound of the
// original): the orders are generated in memory in chunks with the harness's tier mix
// (a quarter DIAMANTE = VIP), every VIP order is added as a `processOrder` job at priority 1,
// the VIP queue is drained by a Worker at concurrency 25, then every NORMAL order is added at
// priority 2 and drained the same way. A job's processor does what the original's did minus
// the database write: it reads the order from the job's data and returns.
//
// Usage: node bench.mjs --redis redis://127.0.0.1:PORT --n 100000 [--concurrency 25]
// Prints one JSON line: the total and each phase, in seconds.
import { Queue, Worker } from 'bullmq';

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
}

const url = new URL(arg('redis', 'redis://127.0.0.1:6379'));
const connection = { host: url.hostname, port: Number(url.port || 6379), maxRetriesPerRequest: null };
const n = Number(arg('n', '100000'));
const concurrency = Number(arg('concurrency', '25'));
const chunk = Number(arg('chunk', '10000'));
if (!Number.isInteger(n) || n < 1 || !Number.isInteger(concurrency) || concurrency < 1) {
  console.error('--n and --concurrency must be positive integers');
  process.exit(2);
}

const TIERS = ['BRONZE', 'PRATA', 'OURO', 'DIAMANTE'];
let seed = 1;
function random() { // a small seeded generator (mulberry32): the same orders every time
  seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}

const name = 'processOrder';
const queue = new Queue(name, { connection });
await queue.obliterate({ force: true });
let processed = 0;
let lastDone = 0;
const worker = new Worker(name, async (job) => {
  processed += 1;
  lastDone = performance.now();
  return job.data.id;
}, { connection, concurrency, autorun: false, removeOnComplete: { count: 0 }, removeOnFail: { count: 0 } });
await worker.waitUntilReady();

function drained(target) {
  return new Promise((resolve) => {
    const check = () => (processed >= target ? resolve() : setTimeout(check, 5));
    check();
  });
}

const t0 = performance.now();
const normal = [];
let vip = 0;
let generateMs = 0;
let enqueueVipMs = 0;
for (let start = 0; start < n; start += chunk) {
  const g = performance.now();
  const jobs = [];
  for (let seq = start; seq < Math.min(n, start + chunk); seq += 1) {
    const tier = TIERS[Math.floor(random() * TIERS.length)];
    const order = { seq, id: `order-${seq}`, cliente: `c${seq % 575}`, valor: 10 + random() * 9990,
      tier, status: 'pendente' };
    if (tier === 'DIAMANTE') jobs.push({ name, data: order, opts: { priority: 1 } });
    else normal.push(order);
  }
  generateMs += performance.now() - g;
  const e = performance.now();
  await queue.addBulk(jobs);
  enqueueVipMs += performance.now() - e;
  vip += jobs.length;
  if (start === 0) worker.run();
}
await drained(vip);
const vipDone = performance.now();
const e = performance.now();
for (let i = 0; i < normal.length; i += chunk) {
  await queue.addBulk(normal.slice(i, i + chunk).map((data) => ({ name, data, opts: { priority: 2 } })));
}
const enqueueNormalMs = performance.now() - e;
await drained(vip + normal.length);
const total = (lastDone - t0) / 1000;
console.log(JSON.stringify({
  tool: 'bullmq', version: (await import('bullmq/package.json', { with: { type: 'json' } })).default.version,
  n, vip, normal: normal.length, concurrency, processed,
  totalS: Number(total.toFixed(3)), ordersPerSec: Math.round(n / total),
  generateS: Number((generateMs / 1000).toFixed(3)), enqueueVipS: Number((enqueueVipMs / 1000).toFixed(3)),
  vipS: Number(((vipDone - t0) / 1000).toFixed(3)), enqueueNormalS: Number((enqueueNormalMs / 1000).toFixed(3)),
}));
await worker.close();
await queue.obliterate({ force: true });
await queue.close();
