// The server's ceiling for conditional puts (If-None-Match: *), which a backfill sends so that
// it never replaces a state the stream wrote: the same lean Node client as
// ../shared/bench/ceiling (AWS SDK v2, keep-alive sockets), the header added to each request.
// Prints one JSON object. Run by bench/recovery.py with NODE_PATH set to the ceiling's cache.
import { createRequire } from "node:module";
import http from "node:http";
const require = createRequire(import.meta.url);
process.env.AWS_SDK_JS_SUPPRESS_MAINTENANCE_MODE_MESSAGE = "1";
const AWS = require("aws-sdk");

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const N = Number(arg("objects", 5000));
const CONC = Number(arg("concurrency", 64));
const SIZE = Number(arg("size", 200));
const BUCKET = arg("bucket", `conditional-${Date.now()}`);

const agent = new http.Agent({ keepAlive: true, maxSockets: CONC });
const s3 = new AWS.S3({ region: process.env.AWS_REGION || "us-east-1", maxRetries: 10,
  httpOptions: { agent, timeout: 30000 }, s3ForcePathStyle: true, signatureVersion: "v4",
  endpoint: process.env.AWS_ENDPOINT_URL_S3 });

async function pool(jobs, conc, fn) {
  let next = 0;
  const t = process.hrtime.bigint();
  await Promise.all(Array.from({ length: conc }, async () => { while (next < jobs) await fn(next++); }));
  return jobs / (Number(process.hrtime.bigint() - t) / 1e9);
}

try { await s3.createBucket({ Bucket: BUCKET }).promise(); } catch (e) { if (!/Owned|Exists/.test(e.code)) throw e; }
await s3.putBucketVersioning({ Bucket: BUCKET, VersioningConfiguration: { Status: "Enabled" } }).promise();
const body = Buffer.alloc(SIZE, 120);
await s3.putObject({ Bucket: BUCKET, Key: "warm", Body: body }).promise();
const put = (key, conditional) => {
  const request = s3.putObject({ Bucket: BUCKET, Key: key, Body: body });
  if (conditional) request.on("build", () => { request.httpRequest.headers["If-None-Match"] = "*"; });
  return request.promise();
};
const out = { client: `node ${process.version} aws-sdk v2`, concurrency: CONC, objects: N };
out.s3_put_per_s = Math.round(await pool(N, CONC, (i) => put(`plain/${i}`, false)));
out.s3_conditional_put_per_s = Math.round(await pool(N, CONC, (i) => put(`conditional/${i}`, true)));
console.log(JSON.stringify(out));
agent.destroy();
