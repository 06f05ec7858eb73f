import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { tmpDir } from './tmp.js';

/**
 * A kubeconfig as a cluster hands one out: one cluster (its HTTPS address
 * and CA file), one user with a bearer token, namespace `repr`. Returns the
 * file's path.
 */
export function writeKubeconfig(server: string, caFile: string, token: string): string {
  const file = path.join(tmpDir('repr-kubeconfig-'), 'kubeconfig');
  writeFileSync(
    file,
    [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      '- name: cluster',
      '  cluster:',
      `    server: ${server}`,
      `    certificate-authority: ${caFile}`,
      'users:',
      '- name: scheduler',
      '  user:',
      `    token: ${token}`,
      'contexts:',
      '- name: cluster',
      '  context: {cluster: cluster, user: scheduler, namespace: repr}',
      'current-context: cluster',
      '',
    ].join('\n'),
  );
  return file;
}
