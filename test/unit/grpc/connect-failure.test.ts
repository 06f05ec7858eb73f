import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { explainConnectFailure, isConnectFailure, isUnreachable } from '../../../src/grpc/connect-failure.js';
import { Code } from '../../../src/common/errors.js';

// What grpc-js reports, word for word, for failures seen against real servers.
const failed = (last: string) => `No connection established. Last error: ${last}. Resolution note: `;
const tlsEndpoint = { target: 'grpcs://127.0.0.1:1234', host: '127.0.0.1', port: 1234, tls: {} };

describe('explainConnectFailure', () => {
  it('says in one line what is wrong with the certificate and what to pass', async () => {
    const cases: [string, RegExp][] = [
      [
        'Error: self-signed certificate in certificate chain',
        /not trusted \(self-signed certificate in certificate chain\); pass --tls-ca with the CA that signed it$/,
      ],
      ['Error: unable to verify the first certificate', /not trusted \(unable to verify the first certificate\); pass --tls-ca/],
      ['Error: certificate has expired', /the server's certificate has expired/],
      [
        "Error [ERR_TLS_CERT_ALTNAME_INVALID]: Hostname/IP does not match certificate's altnames: Host: example.com. is not in the cert's altnames: DNS:localhost",
        /not issued for the name dialled \(Hostname\/IP does not match .*DNS:localhost\); dial a name the certificate lists/,
      ],
      [
        '807C62EC667F0000:error:0A00045C:SSL routines:ssl3_read_bytes:tlsv13 alert certificate required:../deps/openssl/openssl/ssl/record/rec_layer_s3.c:1601:SSL alert number 116\n (2026-12-03T22:45:46.390Z)',
        /the server requires a client certificate; pass --tls-cert and --tls-key$/,
      ],
      [
        'Error: 80:error:0A000418:SSL routines:ssl3_read_bytes:tlsv13 alert unknown ca:../x.c:1:SSL alert number 48',
        /refused this client's certificate \(tlsv13 alert unknown ca\)/,
      ],
      [
        'Error: 807C62EC667F0000:error:0A00010B:SSL routines:ssl3_get_record:wrong version number:../deps/openssl/openssl/ssl/record/ssl3_record.c:350:\n',
        /the server does not speak TLS \(wrong version number\); use grpc:\/\/127\.0\.0\.1:1234$/,
      ],
    ];
    for (const [last, pattern] of cases) {
      const why = await explainConnectFailure(failed(last), tlsEndpoint);
      assert.match(why ?? '', /^cannot reach grpcs:\/\/127\.0\.0\.1:1234: /, last);
      assert.match(why ?? '', pattern, last);
      assert.doesNotMatch(why ?? '', /\n/, 'one line');
      assert.equal(isConnectFailure({ code: Code.UNAVAILABLE, details: why }), true);
    }
  });

  it('says in words that no server could be reached, TLS or not', async () => {
    const plain = { target: 'grpc://127.0.0.1:1234', host: '127.0.0.1', port: 1234 };
    const cases: [string, string][] = [
      [failed('Error: connect ECONNREFUSED 127.0.0.1:1234'), 'connection refused: nothing listens at that address'],
      [failed('Error: connect EHOSTUNREACH 10.9.9.9:1234'), 'no route to that host'],
      [failed('Error: connect ETIMEDOUT 10.9.9.9:1234'), 'the connection timed out'],
      ['Name resolution failed for target dns:nohost.invalid:1234', 'the host name does not resolve'],
    ];
    for (const endpoint of [plain, tlsEndpoint]) {
      for (const [details, reason] of cases) {
        const why = await explainConnectFailure(details, endpoint);
        assert.equal(why, `cannot reach ${endpoint.target}: ${reason}`);
        assert.equal(isUnreachable({ code: Code.UNAVAILABLE, details: why }), true);
      }
    }
    const tlsWhy = await explainConnectFailure(failed('Error: certificate has expired'), tlsEndpoint);
    assert.equal(isUnreachable({ code: Code.UNAVAILABLE, details: tlsWhy }), false, 'a server that answered is not unreachable');
  });

  it('leaves other failures as grpc-js wrote them', async () => {
    assert.equal(await explainConnectFailure(failed('Error: something new'), tlsEndpoint), undefined);
    assert.equal(await explainConnectFailure('Deadline exceeded', tlsEndpoint), undefined);
    const plain = { target: 'grpc://127.0.0.1:1234', host: '127.0.0.1', port: 1234 };
    assert.equal(await explainConnectFailure(failed('Error: self-signed certificate'), plain), undefined, 'a plaintext channel checks no certificate');
    assert.equal(isConnectFailure({ code: Code.UNAVAILABLE, details: 'No connection established' }), false);
  });
});
