// A reference restore written with the ceiling's lean Node client (AWS SDK v2, keep-alive
// sockets): list the backup's current objects, GET each one, and BatchWriteItem them 25 at a
// time into a new table. It does the same requests as `dynamo-backups restore` (latest) and no
// checks, so it shows what the servers allow for this workload when S3, DynamoDB and the client
// share the machine, which the one-service-at-a-time ceiling does not. Prints one JSON object.
// Run by bench/recovery.py with NODE_PATH set to the ceiling's cache.
//   node restore_reference.mjs --bucket B --prefix P/Table/ --table T --key pk
import { createRequire } from "node:module";
import http from "node:http";
const require = createRequire(import.meta.url);
process.env.AWS_SDK_JS_SUPPRESS_MAINTENANCE_MODE_MESSAGE = "1";
const AWS = require("aws-sdk");

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const BUCKET = arg("bucket");
const PREFIX = arg("prefix");
const TABLE = arg("table");
const KEY = arg("key", "pk");
const READERS = Number(arg("readers", 64));
const WRITERS = Number(arg("writers", 16));

const agent = new http.Agent({ keepAlive: true, maxSockets: READERS + WRITERS });
const region = process.env.AWS_REGION || "us-east-1";
const common = { region, maxRetries: 10, httpOptions: { agent, timeout: 30000 } };
const s3 = new AWS.S3({ ...common, s3ForcePathStyle: true, signatureVersion: "v4",
  endpoint: process.env.AWS_ENDPOINT_URL_S3 });
const ddb = new AWS.DynamoDB({ ...common, endpoint: process.env.AWS_ENDPOINT_URL_DYNAMODB });

await ddb.createTable({ TableName: TABLE, BillingMode: "PAY_PER_REQUEST",
  KeySchema: [{ AttributeName: KEY, KeyType: "HASH" }],
  AttributeDefinitions: [{ AttributeName: KEY, AttributeType: "S" }] }).promise();
await ddb.waitFor("tableExists", { TableName: TABLE, $waiter: { delay: 1 } }).promise();

const started = process.hrtime.bigint();
const keys = [];
let nextKey = 0;
let listed = false;
let token;
const listing = (async () => {
  do {
    const page = await s3.listObjectsV2({ Bucket: BUCKET, Prefix: PREFIX, ContinuationToken: token }).promise();
    for (const entry of page.Contents || []) if (entry.Size > 0) keys.push(entry.Key);
    token = page.NextContinuationToken;
  } while (token);
  listed = true;
})();

let written = 0;
let pending = [];
let writing = 0;
const writes = [];
const waiters = [];
async function write(batch) {
  let requests = batch.map((item) => ({ PutRequest: { Item: item } }));
  while (requests.length) {
    const answer = await ddb.batchWriteItem({ RequestItems: { [TABLE]: requests } }).promise();
    const left = (answer.UnprocessedItems && answer.UnprocessedItems[TABLE]) || [];
    written += requests.length - left.length;
    requests = left;
  }
}
async function submit(batch) {
  while (writing >= WRITERS) await new Promise((resolve) => waiters.push(resolve));
  writing++;
  writes.push(write(batch).finally(() => { writing--; const next = waiters.shift(); if (next) next(); }));
}
async function reader() {
  for (;;) {
    if (nextKey >= keys.length) {
      if (listed) return;
      await new Promise((resolve) => setTimeout(resolve, 5));
      continue;
    }
    const object = await s3.getObject({ Bucket: BUCKET, Key: keys[nextKey++] }).promise();
    pending.push(JSON.parse(object.Body.toString("utf8")));
    if (pending.length >= 25) { const batch = pending; pending = []; await submit(batch); }
  }
}
await Promise.all([listing, ...Array.from({ length: READERS }, reader)]);
if (pending.length) await submit(pending);
await Promise.all(writes);
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
console.log(JSON.stringify({ client: `node ${process.version} aws-sdk v2`, readers: READERS,
  writers: WRITERS, written, seconds: Math.round(seconds * 10) / 10,
  items_per_s: Math.round(written / seconds) }));
agent.destroy();
