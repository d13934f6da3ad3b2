// ssh2-sftp-client as Node.js merchants use it.
// usage: node ssh2_put.js put|fastPut HOST PORT USER KEY LOCAL REMOTE
// put() keeps one 32 KiB write outstanding (stop-and-wait); fastPut() pipelines.
const fs = require('fs');
const path = require('path');
const Client = require(path.join(__dirname, 'node_modules', 'ssh2-sftp-client'));

async function main() {
  const [mode, host, port, username, key, local, remote] = process.argv.slice(2);
  const sftp = new Client();
  await sftp.connect({ host, port: Number(port), username, privateKey: fs.readFileSync(key), readyTimeout: 30000 });
  const started = Date.now();
  if (mode === 'put') {
    await sftp.put(local, remote);
  } else if (mode === 'fastPut') {
    await sftp.fastPut(local, remote);
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
  console.log(`${mode} ${fs.statSync(local).size} bytes in ${(Date.now() - started) / 1000} s`);
  await sftp.end();
}

main().catch((e) => {
  console.error(e.message || e);
  process.exit(1);
});
