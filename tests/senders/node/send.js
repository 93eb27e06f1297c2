// Sends each file in its own association with dcmjs-dimse and prints one JSON line per
// file: {"file", "status" (the C-STORE status, null without a response), "events"}.
// One association per file: in one association dcmjs-dimse stops itself at the first file
// it cannot encode and the rest of the batch is lost.
// Usage: node send.js HOST PORT CALLING CALLED FILE...
'use strict';

const { Client, log } = require('dcmjs-dimse');
const { CStoreRequest } = require('dcmjs-dimse').requests;

// Its per-PDU log would go to stdout, where the results go.
log.setLevel('error');

function sendOne(host, port, calling, called, file) {
  return new Promise((resolve) => {
    const outcome = { file, status: null, events: [] };
    const client = new Client();
    const request = new CStoreRequest(file);
    request.on('response', (response) => {
      outcome.status = response.getStatus();
    });
    client.addRequest(request);
    for (const name of ['associationAccepted', 'associationRejected', 'associationReleased']) {
      client.on(name, () => outcome.events.push(name));
    }
    client.on('networkError', (e) => outcome.events.push(`networkError: ${e.message}`));
    client.on('closed', () => resolve(outcome));
    try {
      client.send(host, port, calling, called, { connectTimeout: 10000, pduTimeout: 30000 });
    } catch (e) {
      outcome.events.push(`exception: ${e.message}`);
      resolve(outcome);
    }
  });
}

async function main() {
  const [host, port, calling, called, ...files] = process.argv.slice(2);
  for (const file of files) {
    const outcome = await sendOne(host, Number(port), calling, called, file);
    process.stdout.write(`${JSON.stringify(outcome)}\n`);
  }
}

main();
