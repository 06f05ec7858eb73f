import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { startHaproxy } from '../../support/haproxy.js';
import { type PostgresServer, startPostgres } from '../../support/postgres.js';

// The farm's own parts the tests start: PostgreSQL and HAProxy from Debian, for real.
describe('farm test services', () => {
  let db: PostgresServer;
  before(async () => {
    db = await startPostgres();
  });
  after(() => db.stop());

  it('starts PostgreSQL on a free port that a client reaches by URL', async () => {
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    const r = await client.query('SELECT current_database() AS d');
    assert.equal(r.rows[0].d, 'repr');
    await client.end();
    const other = db.createDatabase('other');
    assert.match(other, /\/other$/);
    assert.equal(db.psql('SELECT 1 + 1', 'other'), '2');
  });

  it('starts HAProxy passing TCP through to a live backend', async () => {
    // The health checks connect and reset; an echo server must shrug that off.
    const echo = net.createServer((s) => s.on('error', () => undefined).pipe(s));
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    const proxy = await startHaproxy([`127.0.0.1:${(echo.address() as net.AddressInfo).port}`]);
    try {
      const reply = await new Promise<string>((resolve, reject) => {
        const s = net.connect(proxy.port, '127.0.0.1', () => s.write('ping'));
        s.once('data', (d) => {
          resolve(d.toString());
          s.destroy();
        });
        s.once('error', reject);
      });
      assert.equal(reply, 'ping');
      assert.deepEqual([...(await proxy.sessions()).keys()], [`127.0.0.1:${(echo.address() as net.AddressInfo).port}`]);
    } finally {
      proxy.stop();
      echo.close();
    }
  });
});
