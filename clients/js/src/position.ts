// Positions are opaque to applications. This gateway writes them "epoch:hi:lo:check": positions
// with the same epoch and check (the channel's checksum) are ordered by (hi, lo). The client only
// uses that to drop duplicates; anything it cannot parse is never treated as a duplicate.
// (The same rules as clients/go/wsclient/position.go.)

interface Parsed {
  epoch: string;
  hi: bigint;
  lo: bigint;
  check: string;
}

const digits = /^[0-9]+$/;

function parse(s: string): Parsed | undefined {
  const parts = s.split(':');
  if (parts.length !== 4 || parts[0] === '' || parts[3] === '') return undefined;
  if (!digits.test(parts[1]) || !digits.test(parts[2])) return undefined;
  return { epoch: parts[0], hi: BigInt(parts[1]), lo: BigInt(parts[2]), check: parts[3] };
}

/**
 * comparePositions returns -1, 0 or 1 when a is before, at or after b, and undefined when they
 * cannot be compared (unparsable, another epoch or another channel).
 */
export function comparePositions(a: string, b: string): -1 | 0 | 1 | undefined {
  const pa = parse(a);
  const pb = parse(b);
  if (!pa || !pb || pa.epoch !== pb.epoch || pa.check !== pb.check) return undefined;
  if (pa.hi !== pb.hi) return pa.hi < pb.hi ? -1 : 1;
  if (pa.lo !== pb.lo) return pa.lo < pb.lo ? -1 : 1;
  return 0;
}

/** seen reports whether a message at pos was already delivered when last is the last delivered. */
export function seen(pos: string, last: string): boolean {
  const c = comparePositions(pos, last);
  return c !== undefined && c <= 0;
}
