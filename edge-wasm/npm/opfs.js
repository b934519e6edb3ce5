// The persistent tier of the replica's cache: the range responses of a
// store's immutable objects (snapshots and segments), kept in the browser's
// Origin Private File System so that a reloaded page, or a second replica
// of the same store, reads them from disk instead of the network.
//
// It sits under the wasm reader as its `fetch` (options.fetch), so the
// bytes it returns go through the same checks as the network's: every
// frame's checksum or AEAD tag, every index, the chain. It adds its own
// SHA-256 per entry, so an entry damaged on disk is dropped and fetched
// again instead of failing the query.
//
// What it caches: successful GET responses (a range, or a whole object) for
// any object but `*.json` (the manifest and other mutable documents are
// always asked of the origin). An entry is found again by the same object
// and the same range: a lazy replica asks the same ranges for the same
// query and the same cache state, so a reload that reruns the page's
// queries hits, and a full replica reads its objects whole; a different
// query that reads a page inside another range fetches it again (the
// in-memory cache is the one that works page by page).
//
// Capped in bytes per store; the least recently used entries go first
// (across page loads, by the time each entry was written).

const ROOT = 'distributary-edge';
/** Default size of one store's OPFS cache in bytes: 128 MiB. */
export const DEFAULT_OPFS_BYTES = 128 * 1024 * 1024;
// One response larger than this share of the cache is not kept.
const LARGEST_SHARE = 4;

/** Whether this JavaScript host has an OPFS the cache can write to. */
export function opfsAvailable() {
  return (
    typeof navigator !== 'undefined' &&
    typeof navigator.storage?.getDirectory === 'function' &&
    typeof globalThis.FileSystemFileHandle?.prototype?.createWritable === 'function'
  );
}

const shelves = new Map();
// Writes still running, for opfsIdle().
const writing = new Set();

/** Resolves once every OPFS write started so far has finished. */
export async function opfsIdle() {
  while (writing.size) await Promise.allSettled([...writing]);
}

/**
 * A `fetch` for the replica of `storeUrl` that answers range requests of
 * immutable objects from OPFS when it can and keeps what `baseFetch`
 * returns for them, within `capacity` bytes.
 */
export function opfsFetch(storeUrl, baseFetch, capacity = DEFAULT_OPFS_BYTES) {
  const shelf = openShelf(storeUrl, capacity);
  return async (request) => {
    const url = new URL(request.url);
    if (request.method !== 'GET' || url.pathname.endsWith('.json')) return baseFetch(request);
    // The object, not the query string (a token that may rotate).
    const range = request.headers.get('range') ?? 'whole';
    const name = await digestHex(new TextEncoder().encode(`${url.origin}${url.pathname}\n${range}`));
    const kept = await shelf;
    const hit = kept && (await kept.get(name));
    if (hit) return hit;
    const response = await baseFetch(request);
    const length = Number(response.headers.get('content-length') ?? NaN);
    if (kept && (response.status === 200 || response.status === 206) && !(length > kept.capacity / LARGEST_SHARE)) {
      // Written in the background: the query does not wait for the disk.
      const write = kept.put(name, response.clone()).catch(() => {});
      writing.add(write);
      write.finally(() => writing.delete(write));
    }
    return response;
  };
}

/** The shelf of `storeUrl` (one per store and page), or null without OPFS. */
function openShelf(storeUrl, capacity) {
  let shelf = shelves.get(storeUrl);
  if (!shelf) {
    shelf = Shelf.open(storeUrl, capacity).catch(() => null);
    shelves.set(storeUrl, shelf);
  }
  return shelf.then((s) => {
    if (s) s.capacity = capacity;
    return s;
  });
}

class Shelf {
  constructor(dir, capacity, entries) {
    this.dir = dir;
    this.capacity = capacity;
    // Name -> bytes on disk, least recently used first.
    this.entries = entries;
    this.used = [...entries.values()].reduce((sum, size) => sum + size, 0);
  }

  static async open(storeUrl, capacity) {
    const root = await navigator.storage.getDirectory();
    const top = await root.getDirectoryHandle(ROOT, { create: true });
    const dir = await top.getDirectoryHandle(await digestHex(new TextEncoder().encode(storeUrl)), { create: true });
    const found = [];
    for await (const [name, handle] of dir.entries()) {
      if (handle.kind !== 'file') continue;
      const file = await handle.getFile();
      found.push([file.lastModified, name, file.size]);
    }
    found.sort((a, b) => a[0] - b[0]);
    const shelf = new Shelf(dir, capacity, new Map(found.map(([, name, size]) => [name, size])));
    await shelf.trim();
    return shelf;
  }

  /** The kept response `name`, if it is there and whole; else null. */
  async get(name) {
    if (!this.entries.has(name)) return null;
    try {
      const file = await (await this.dir.getFileHandle(name)).getFile();
      const entry = await decode(new Uint8Array(await file.arrayBuffer()));
      if (!entry) {
        await this.remove(name);
        return null;
      }
      const size = this.entries.get(name);
      this.entries.delete(name);
      this.entries.set(name, size);
      const headers = { 'content-length': String(entry.body.length) };
      if (entry.range) headers['content-range'] = entry.range;
      if (entry.etag) headers.etag = entry.etag;
      return new Response(entry.body, { status: entry.status, headers });
    } catch {
      await this.remove(name);
      return null;
    }
  }

  /** Keeps `response` as `name`, then trims the shelf to its capacity. */
  async put(name, response) {
    const body = new Uint8Array(await response.arrayBuffer());
    const meta = {
      status: response.status,
      range: response.headers.get('content-range'),
      etag: response.headers.get('etag'),
      sha256: await digestHex(body),
    };
    const header = new TextEncoder().encode(JSON.stringify(meta));
    const bytes = new Uint8Array(4 + header.length + body.length);
    new DataView(bytes.buffer).setUint32(0, header.length);
    bytes.set(header, 4);
    bytes.set(body, 4 + header.length);
    if (bytes.length > this.capacity / LARGEST_SHARE) return;
    const writable = await (await this.dir.getFileHandle(name, { create: true })).createWritable();
    await writable.write(bytes);
    await writable.close();
    this.used += bytes.length - (this.entries.get(name) ?? 0);
    this.entries.delete(name);
    this.entries.set(name, bytes.length);
    await this.trim();
  }

  async trim() {
    for (const name of [...this.entries.keys()]) {
      if (this.used <= this.capacity) break;
      await this.remove(name);
    }
  }

  async remove(name) {
    const size = this.entries.get(name);
    if (size === undefined) return;
    this.entries.delete(name);
    this.used -= size;
    try {
      await this.dir.removeEntry(name);
    } catch {
      // Gone already (another tab trimmed it).
    }
  }
}

/** An entry's parts, or null if it is damaged (its SHA-256 does not match). */
async function decode(bytes) {
  if (bytes.length < 4) return null;
  const length = new DataView(bytes.buffer, bytes.byteOffset).getUint32(0);
  if (4 + length > bytes.length) return null;
  let meta;
  try {
    meta = JSON.parse(new TextDecoder().decode(bytes.subarray(4, 4 + length)));
  } catch {
    return null;
  }
  const body = bytes.slice(4 + length);
  if (![200, 206].includes(meta?.status) || meta.sha256 !== (await digestHex(body))) return null;
  return { status: meta.status, range: meta.range, etag: meta.etag, body };
}

async function digestHex(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}
