import { computeDigest, type Digest, fromWire, SHA256, toWire } from '../src/common/digest.js';
import type { ReapiClient } from '../src/reapi/reapi-client.js';
import { Action, type ActionResult, Command, Directory, Tree } from '../src/proto/build/bazel/remote/execution/v2/remote_execution.js';

/** An input tree as a test writes it: a string is a file, `{ symlink }` a symlink, an object a directory. */
export type TreeSpec = { [name: string]: string | { symlink: string } | { executable: string } | TreeSpec };

export async function putBlob(client: ReapiClient, data: Uint8Array): Promise<Digest> {
  const b = Buffer.from(data);
  const d = computeDigest(SHA256, b);
  await client.write(d, b);
  return d;
}

/** Uploads a tree's files and Directory messages; returns the root's digest. */
export async function uploadTree(client: ReapiClient, spec: TreeSpec): Promise<Digest> {
  const dir = Directory.fromPartial({});
  for (const [name, v] of Object.entries(spec).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    if (typeof v === 'string') dir.files.push({ name, digest: toWire(await putBlob(client, Buffer.from(v))), isExecutable: false, nodeProperties: undefined });
    else if ('symlink' in v && typeof v.symlink === 'string') dir.symlinks.push({ name, target: v.symlink, nodeProperties: undefined });
    else if ('executable' in v && typeof v.executable === 'string')
      dir.files.push({ name, digest: toWire(await putBlob(client, Buffer.from(v.executable))), isExecutable: true, nodeProperties: undefined });
    else dir.directories.push({ name, digest: toWire(await uploadTree(client, v as TreeSpec)) });
  }
  return putBlob(client, Directory.encode(dir).finish());
}

/** Uploads an Action whose Command and input root the test writes field by field (hostile ones included). */
export async function uploadRawAction(
  client: ReapiClient,
  spec: { root: TreeSpec | Digest; command: Partial<Command>; action?: Partial<Action> },
): Promise<Digest> {
  const root = 'hash' in spec.root && typeof spec.root.hash === 'string' ? (spec.root as Digest) : await uploadTree(client, spec.root as TreeSpec);
  const command = await putBlob(
    client,
    Command.encode(
      Command.fromPartial({
        environmentVariables: [{ name: 'PATH', value: '/usr/bin:/bin' }],
        platform: { properties: [{ name: 'OSFamily', value: 'linux' }] },
        ...spec.command,
      }),
    ).finish(),
  );
  return putBlob(
    client,
    Action.encode(
      Action.fromPartial({
        commandDigest: toWire(command),
        inputRootDigest: toWire(root),
        platform: { properties: [{ name: 'OSFamily', value: 'linux' }] },
        ...spec.action,
      }),
    ).finish(),
  );
}

/** Every blob an ActionResult refers to (files, trees and their files, logs), read back. */
export async function resultBlobs(client: ReapiClient, r: ActionResult): Promise<Buffer[]> {
  const out: Buffer[] = [];
  const read = async (d: Parameters<typeof fromWire>[1]) => out.push(await client.read(fromWire(SHA256, d)));
  for (const f of r.outputFiles) await read(f.digest);
  for (const d of r.outputDirectories) {
    const tree = Tree.decode(await client.read(fromWire(SHA256, d.treeDigest)));
    for (const dir of [tree.root!, ...tree.children]) for (const f of dir.files) await read(f.digest);
  }
  if (r.stdoutDigest) await read(r.stdoutDigest);
  if (r.stderrDigest) await read(r.stderrDigest);
  return out;
}
